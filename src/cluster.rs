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
    /// The operator namespace, where the signing Secrets are.
    pub namespace: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Base URL the server is reached at.
    pub public_url: String,
    /// How long a TokenReview outcome is reused.
    pub review_ttl: Duration,
    /// PEM certificate chain and key to serve TLS with (what node agents verify).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
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
        tokio::spawn(follow(index, Duration::from_millis(200), move |snapshot| {
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
        }),
        metrics: Arc::new(Metrics::new()),
        clock: Arc::new(SystemClock),
        public_url: options.public_url.clone(),
        ready,
        login,
    };
    let fail = |e| ServerError::Serve(options.listen, e);
    tracing::info!(addr = %options.listen, public_url = %options.public_url, tls = options.tls.is_some(), "serving");
    if let Some((cert, key)) = &options.tls {
        let listener = std::net::TcpListener::bind(options.listen).map_err(fail)?;
        let (cert, key) = (
            std::fs::read(cert).map_err(fail)?,
            std::fs::read(key).map_err(fail)?,
        );
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            crate::standalone::shutdown_signal().await;
            stopper.graceful_shutdown(Some(Duration::from_secs(10)));
        });
        return crate::server::serve_tls(listener, router(state), cert, key, handle)
            .await
            .map_err(fail);
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(fail)?;
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(crate::standalone::shutdown_signal())
    .await
    .map_err(fail)
}
