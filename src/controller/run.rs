//! Wiring: the Controllers, their watches, leader election, metrics and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::leader::{Attempt, LeaderTiming, LeadershipLost, LeaseLock};
use super::{Context, SdkConnector, connection, iamprovider, rolemapping, samlapp};
use crate::crd::{Connection, IAMProvider, RoleMapping, SAMLApp};

/// Options of `rolegate controller`.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// The operator's namespace (Lease, managed Secrets, Secret references without namespace).
    pub namespace: String,
    /// Base URL of the rolegate server.
    pub public_url: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub listen: SocketAddr,
    /// Name of the Lease.
    pub lease_name: String,
    /// Seconds between IAM resyncs.
    pub resync: Duration,
    /// The operator's certificates.
    pub certificates: super::certs::CertOptions,
    /// The namespace whose Secrets only the controller reads (the CA, IAM access keys).
    pub secrets_namespace: String,
    /// The cluster's name in the IAM ownership tag; `None` uses the `kube-system` UID.
    pub cluster_name: Option<String>,
    /// Lease duration, renew deadline and retry period.
    pub leader: LeaderTiming,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No kubeconfig or in-cluster config.
    #[error("cannot reach Kubernetes: {0}")]
    Client(#[from] kube::Error),
    /// The metrics listener cannot be bound.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// Leadership was lost: another replica took the Lease, or it could not be renewed in
    /// time. The process exits non-zero and its replacement campaigns again.
    #[error("lost the leader lease {lease}: {lost}")]
    LostLease {
        /// The Lease.
        lease: String,
        /// How it was lost.
        lost: LeadershipLost,
    },
    /// No cluster name was given and the `kube-system` Namespace has no UID to use.
    #[error("no --cluster-name and no kube-system Namespace UID to default it to")]
    ClusterName,
}

/// Runs `work` only while `leadership` holds: when leadership is lost, `work` is dropped at
/// once (no graceful drain, whose in-flight reconciles could still write) and the loss is
/// returned. Leadership is polled first, so a loss wins over work that is ready at the same
/// time.
///
/// # Errors
/// How leadership was lost.
pub async fn lead<W: std::future::Future>(
    work: W,
    leadership: impl std::future::Future<Output = LeadershipLost>,
) -> Result<W::Output, LeadershipLost> {
    tokio::select! {
        biased;
        lost = leadership => Err(lost),
        out = work => Ok(out),
    }
}

/// The cluster name for ownership tags: the flag, else the UID of `kube-system`, which differs
/// between clusters without anyone choosing names.
async fn cluster_name(client: &Client, given: Option<&str>) -> Result<String, RunError> {
    if let Some(name) = given {
        return Ok(name.to_owned());
    }
    Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await?
        .metadata
        .uid
        .ok_or(RunError::ClusterName)
}

async fn serve_metrics(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    leading: watch::Receiver<bool>,
) {
    use axum::routing::get;
    let metrics = move || {
        let registry = Arc::clone(&registry);
        async move {
            let mut out = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
            out
        }
    };
    let ready = move || {
        let leading = leading.clone();
        async move {
            if *leading.borrow() {
                (axum::http::StatusCode::OK, "leading")
            } else {
                (axum::http::StatusCode::OK, "standby")
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready));
    // The listeners' default limits (header-read and request timeouts, a connection cap).
    let limits = crate::server::Limits::server();
    let served = match listener.into_std() {
        Ok(listener) => {
            crate::server::listener::serve(listener, app, None, &limits, axum_server::Handle::new())
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics server stopped");
    }
}

/// Keeps the operator's certificates: a pass at start, then every minute (a pass is three or
/// four GETs when nothing is due), with backoff after failures.
async fn keep_certificates(
    client: Client,
    options: super::certs::CertOptions,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let work = async {
        loop {
            let started = std::time::Instant::now();
            let result = super::certs::reconcile(&client, &options, ctx.clock.now()).await;
            ctx.observe("Certificates", started, result.as_ref().map(|_| ()));
            let wait = match result {
                Ok(outcome) => {
                    for (which, at) in &outcome.expiries {
                        ctx.metrics
                            .certificate_expiry
                            .get_or_create(&vec![("certificate", (*which).to_owned())])
                            .set(at.as_second());
                    }
                    for change in outcome.changes {
                        tracing::info!(%change, "certificates");
                    }
                    ctx.succeeded("certificates");
                    Duration::from_secs(60)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "certificates");
                    ctx.backoff("certificates")
                }
            };
            tokio::time::sleep(wait).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = shutdown => {}
    }
}

/// Runs the controllers while this replica holds the Lease.
///
/// # Errors
/// No cluster, no listener, or lost leadership: another holder, or no renewal within the renew
/// deadline (the process exits non-zero and its replacement campaigns again).
pub async fn run(options: ControllerOptions) -> Result<(), RunError> {
    let client = crate::cluster::kube_client("controller").await?;
    let mut registry = Registry::with_prefix("rolegate");
    let mut ctx = Context::new(
        client.clone(),
        Arc::new(SdkConnector),
        options.namespace.clone(),
        options.public_url.clone(),
        &mut registry,
    );
    ctx.resync = options.resync;
    let cluster = cluster_name(&client, options.cluster_name.as_deref()).await?;
    tracing::info!(%cluster, secrets_namespace = %options.secrets_namespace, "IAM SAML providers are owned as this cluster");
    let ctx = Arc::new(
        ctx.with_secrets_namespace(options.secrets_namespace.clone())
            .with_cluster_name(cluster),
    );
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| RunError::Listen(options.listen, e))?;
    let (leading_tx, leading_rx) = watch::channel(false);
    tokio::spawn(serve_metrics(listener, Arc::new(registry), leading_rx));

    let holder =
        std::env::var("POD_NAME").unwrap_or_else(|_| format!("rolegate-{}", std::process::id()));
    let timing = options.leader;
    let lock = LeaseLock::new(
        client.clone(),
        &options.namespace,
        &options.lease_name,
        &holder,
        timing.lease_duration,
    );
    let acquired = loop {
        let attempt_started = std::time::Instant::now();
        match lock.try_acquire_or_renew(ctx.clock.now()).await {
            Ok(Attempt::Held) => break attempt_started,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the leader lease"),
        }
        tokio::time::sleep(timing.retry_period).await;
    };
    tracing::info!(%holder, lease = %options.lease_name, "leading");
    let _ = leading_tx.send(true);
    let clock = Arc::clone(&ctx.clock);
    let leadership = super::leader::hold(&lock, timing, clock.as_ref(), acquired);
    match lead(controllers(client, options.clone(), ctx), leadership).await {
        Ok(()) => Ok(()),
        Err(lost) => {
            tracing::error!(error = %lost, lease = %options.lease_name, "lost the leader lease; stopping");
            Err(RunError::LostLease {
                lease: options.lease_name,
                lost,
            })
        }
    }
}

/// The controllers and the certificate loop, until a shutdown signal drains them.
async fn controllers(client: Client, options: ControllerOptions, ctx: Arc<Context>) {
    let shutdown =
        futures::future::FutureExt::shared(Box::pin(crate::standalone::shutdown_signal()));
    // The sign-in session key: created once if missing, never changed.
    let session = {
        let (client, namespace, stop) =
            (client.clone(), options.namespace.clone(), shutdown.clone());
        let ctx = Arc::clone(&ctx);
        async move {
            let work = async {
                loop {
                    match super::session::ensure(client.clone(), &namespace).await {
                        Ok(super::session::SessionKey::Created) => {
                            tracing::info!(secret = crate::login::SESSION_SECRET, %namespace, "session key created");
                            return;
                        }
                        Ok(super::session::SessionKey::Present) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot ensure the session key Secret");
                            tokio::time::sleep(ctx.backoff("session-key")).await;
                        }
                    }
                }
            };
            tokio::select! {
                () = work => {}
                () = stop => {}
            }
        }
    };
    // Pods admitted without their credentials get an Event, from the leader only.
    let audit = crate::pod_audit::PodAudit::new(client.clone(), ctx.metrics.pods_missed.clone());
    let audit = {
        let (client, namespace, stop) =
            (client.clone(), options.namespace.clone(), shutdown.clone());
        async move {
            tokio::select! {
                () = audit.run(client, &namespace) => {}
                () = stop => {}
            }
        }
    };

    let providers = Controller::new(
        Api::<IAMProvider>::all(client.clone()),
        watcher::Config::default(),
    );
    let provider_store = providers.store();
    let providers = providers
        .watches(
            Api::<SAMLApp>::all(client.clone()),
            watcher::Config::default(),
            move |app| {
                let name = app.name_any();
                provider_store
                    .state()
                    .into_iter()
                    .filter(|p| p.spec.saml_app == name)
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            iamprovider::reconcile,
            iamprovider::error_policy,
            Arc::clone(&ctx),
        )
        .for_each(|_| async {});

    let mappings = Controller::new(
        Api::<RoleMapping>::all(client.clone()),
        watcher::Config::default(),
    );
    let by_provider = mappings.store();
    let by_namespace = mappings.store();
    let mappings = mappings
        .watches(
            Api::<IAMProvider>::all(client.clone()),
            watcher::Config::default(),
            move |p| {
                let name = p.name_any();
                by_provider
                    .state()
                    .into_iter()
                    .filter(|m| m.spec.provider == name)
                    .map(|m| ObjectRef::from_obj(&*m))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            move |ns| {
                let name = ns.name_any();
                by_namespace
                    .state()
                    .into_iter()
                    .filter(|m| m.namespace().as_deref() == Some(name.as_str()))
                    .map(|m| ObjectRef::from_obj(&*m))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            rolemapping::reconcile,
            rolemapping::error_policy,
            Arc::clone(&ctx),
        )
        .for_each(|_| async {});

    let apps = Controller::new(
        Api::<SAMLApp>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Secret>::namespaced(client.clone(), &options.namespace),
        watcher::Config::default().labels("app.kubernetes.io/managed-by=rolegate"),
    )
    .graceful_shutdown_on(shutdown.clone())
    .run(samlapp::reconcile, samlapp::error_policy, Arc::clone(&ctx))
    .for_each(|_| async {});

    let connections = Controller::new(
        Api::<Connection>::all(client.clone()),
        watcher::Config::default(),
    );
    let by_secret = connections.store();
    let connections = connections
        .watches(
            Api::<Secret>::namespaced(client.clone(), &options.namespace),
            watcher::Config::default().labels(crate::store::index::LOGIN_SECRET_LABEL),
            move |secret| {
                let name = secret.name_any();
                by_secret
                    .state()
                    .into_iter()
                    .filter(|c| super::connection::refers_to(c, &name))
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            connection::reconcile,
            connection::error_policy,
            Arc::clone(&ctx),
        )
        .for_each(|_| async {});

    let certificates = keep_certificates(
        client.clone(),
        options.certificates.clone(),
        Arc::clone(&ctx),
        shutdown.clone(),
    );

    tokio::join!(
        providers,
        mappings,
        apps,
        connections,
        certificates,
        audit,
        session
    );
}
