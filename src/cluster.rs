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
use crate::server::{AppState, Issuer, SystemClock, router};
use crate::store::SharedSnapshot;
use crate::store::index::{Index, follow};
use crate::tokenreview::KubeTokenReviewer;
use crate::tokens::TokenVerifier;

/// Options of `rolegate server`.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The cluster's name for the `rolegate-cluster` session tag.
    pub cluster_name: Option<String>,
    /// The operator namespace, where the signing Secrets are.
    pub namespace: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Base URL the server is reached at.
    pub public_url: String,
    /// How long a TokenReview outcome is reused.
    pub review_ttl: Duration,
    /// Where the serving certificate comes from; `None` serves plain http.
    pub tls: Option<TlsSource>,
    /// The credentials URI the Pod webhook injects (where the node agent listens).
    pub credentials_uri: String,
    /// With `tls`: serve TLS here (node agents, the admission webhook) and plain http on
    /// `listen` (probes, an Ingress). Without it, `listen` serves TLS.
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
    let client = Client::try_default().await?;
    let store = Arc::new(SharedSnapshot::default());
    let keys = Arc::new(KeyRing::default());
    let ready = Arc::new(AtomicBool::new(false));
    let index = Index::start(&client, &options.namespace);
    let (tls_tx, mut tls_rx) = tokio::sync::watch::channel(None);
    let login = Arc::new(crate::login::LoginState::new(
        options.namespace.clone(),
        None,
    ));
    {
        let (store, keys, ready, namespace, login) = (
            Arc::clone(&store),
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
            store.replace(snapshot);
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
            sts: Arc::new(SdkSts::new(None).await),
            cache: CredentialCache::default(),
            cluster: options.cluster_name.clone(),
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
    tracing::info!(addr = %options.listen, public_url = %options.public_url, tls = options.tls.is_some(), "serving");
    let app = router(state);
    let Some(source) = &options.tls else {
        return serve_http(options.listen, app).await;
    };
    let tls_addr = options.tls_listen.unwrap_or(options.listen);
    let tls_fail = |e| ServerError::Serve(tls_addr, e);
    let listener = std::net::TcpListener::bind(tls_addr).map_err(tls_fail)?;
    let plain = match options.tls_listen {
        Some(_) => Some(tokio::spawn(serve_http(options.listen, app.clone()))),
        None => None,
    };
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
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        crate::standalone::shutdown_signal().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    tracing::info!(addr = %tls_addr, "serving TLS");
    crate::server::serve_tls_config(listener, app, config, handle)
        .await
        .map_err(tls_fail)?;
    if let Some(plain) = plain {
        plain.abort();
    }
    Ok(())
}

async fn serve_http(addr: SocketAddr, app: axum::Router) -> Result<(), ServerError> {
    let fail = |e| ServerError::Serve(addr, e);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(fail)?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(crate::standalone::shutdown_signal())
    .await
    .map_err(fail)
}
