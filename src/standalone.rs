//! `rolegate serve --config DIR`: the server and IAM registration with resources read from CR
//! YAML files, reloaded when the files change. No cluster is needed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;

use crate::aws::Sts;
use crate::aws::sdk::{AccessKeys, IamAccess, SdkSamlProviders, SdkSts};
use crate::crd::{IAMProvider, SAMLApp};
use crate::credentials::CredentialCache;
use crate::idp::{AppKeys, KeyRing, app_metadata};
use crate::keys::{KeyError, SigningKey};
use crate::metrics::Metrics;
use crate::registration;
use crate::server::listener::{serve as serve_on, shutdown_on_signal};
use crate::server::{AppState, Issuer, SystemClock, internal_router, public_router, router};
use crate::store::files::{LoadError, dir_fingerprint, load_dir};
use crate::store::{SharedSnapshot, Snapshot};
use crate::tokens::TokenVerifier;

/// Options of `rolegate serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The cluster's name for the `rolegate-cluster` session tag.
    pub cluster_name: Option<String>,
    /// The STS region for IAMProviders without `region` (`--sts-region`).
    pub sts_region: Option<String>,
    /// How long a first request waits for a paced STS call (`--sts-max-wait-seconds`).
    pub sts_max_wait: Duration,
    /// Directory of CR YAML files.
    pub config: PathBuf,
    /// Where generated signing keys are kept between runs.
    pub state_dir: PathBuf,
    /// Listen address: everything, or without the sign-in pages when `public_listen` is set.
    pub listen: SocketAddr,
    /// Where only the sign-in pages, the metadata and health are served.
    pub public_listen: Option<SocketAddr>,
    /// What each listener allows a client.
    pub limits: crate::server::Limits,
    /// Base URL this server is reached at; defaults to `http://<public_listen>`, else
    /// `http://<listen>`.
    pub public_url: Option<String>,
    /// Namespace that Secret references without a namespace point into.
    pub namespace: String,
    /// Proxies whose `X-Forwarded-For` names a sign-in's client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How often the config directory is checked for changes.
    pub poll: Duration,
    /// How often IAM is compared with the desired metadata even without changes.
    pub resync: Duration,
    /// The credentials URI the Pod webhook injects (where the node agent listens).
    pub credentials_uri: String,
}

/// Why `serve` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The config directory is invalid.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A signing key is unusable.
    #[error("SAMLApp {app:?}: {source}")]
    Key {
        /// The app.
        app: String,
        /// Why.
        source: KeyError,
    },
    /// A SAMLApp asks for settings rolegate refuses.
    #[error(transparent)]
    Settings(crate::saml::SamlError),
    /// The signing key's Secret is missing or incomplete.
    #[error("SAMLApp {app:?}: {reason}")]
    Secret {
        /// The app.
        app: String,
        /// Why.
        reason: String,
    },
    /// Files in the state directory cannot be read or written.
    #[error("state directory {path}: {source}")]
    State {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The cookie key of people's sign-in cannot be read or made.
    #[error("session key: {0}")]
    SessionKey(String),
    /// The listener cannot be bound or serving failed.
    #[error("serving on {addr}: {source}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn state_io(path: &Path) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::State {
        path: path.to_path_buf(),
        source,
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

/// The files of an app's state directory: the same entries as the controller's managed Secret.
const STATE_FILES: [&str; 5] = ["tls.key", "tls.crt", "next.key", "next.crt", "retiring.crt"];
/// The rotation instants (the managed Secret's annotations), as JSON.
const ROTATION_FILE: &str = "rotation.json";

/// The state directory of one app, read as the controller's managed Secret would hold it.
fn read_state(dir: &Path) -> std::io::Result<Secret> {
    let mut data = BTreeMap::new();
    for file in STATE_FILES {
        match std::fs::read(dir.join(file)) {
            Ok(bytes) => {
                data.insert(file.to_owned(), k8s_openapi::ByteString(bytes));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let annotations: BTreeMap<String, String> = match std::fs::read(dir.join(ROTATION_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e),
    };
    Ok(Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            annotations: Some(annotations),
            ..Default::default()
        },
        data: Some(data),
        ..Secret::default()
    })
}

/// Replaces the state directory with `secret`'s entries in one step: the new state is written
/// beside it and swapped in by renames, so a crash leaves the old state or the new, never a
/// key beside another key's certificate.
fn write_state(dir: &Path, secret: &Secret) -> std::io::Result<()> {
    let staged = dir.with_extension("new");
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged)?;
    for (file, value) in secret.data.iter().flatten() {
        if !STATE_FILES.contains(&file.as_str()) {
            continue;
        }
        let path = staged.join(file);
        if file.ends_with(".key") {
            write_private(&path, &String::from_utf8_lossy(&value.0))?;
        } else {
            std::fs::write(&path, &value.0)?;
        }
    }
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    if !annotations.is_empty() {
        std::fs::write(
            staged.join(ROTATION_FILE),
            serde_json::to_vec_pretty(&annotations)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
        )?;
    }
    let _ = std::fs::remove_dir_all(&old);
    std::fs::rename(dir, &old)?;
    std::fs::rename(&staged, dir)?;
    std::fs::remove_dir_all(&old)
}

/// Finishes a swap a crash interrupted: the staged state is complete once the old one was moved
/// aside.
fn recover_state(dir: &Path) -> std::io::Result<()> {
    let staged = dir.with_extension("new");
    if !dir.exists() && staged.join("tls.key").exists() {
        std::fs::rename(&staged, dir)?;
    }
    Ok(())
}

/// The keys of an app kept in the state directory, after the rotation step due at `now` (the
/// controller's lifecycle: Next published a lead time before it signs, Retiring published a
/// lead time after).
fn rotate_state(
    name: &str,
    app: &SAMLApp,
    dir: &Path,
    now: Timestamp,
) -> Result<AppKeys, ServeError> {
    let secret = read_state(dir).map_err(state_io(dir))?;
    let unusable = |reason: String| ServeError::Secret {
        app: name.to_owned(),
        reason: format!("state directory {}: {reason}", dir.display()),
    };
    let (keys, rotation) = crate::rotation::app_keys(&secret, name).map_err(unusable)?;
    let lead = SignedDuration::from_hours(24 * i64::from(app.spec.signing.rotation_lead_days));
    let step = crate::rotation::plan(&rotation, lead, now);
    if step == crate::rotation::Step::Keep {
        return Ok(keys);
    }
    let next = if step == crate::rotation::Step::PublishNext {
        let settings = crate::saml::AppSettings::from_app(app).map_err(ServeError::Settings)?;
        let (_, pem) = SigningKey::generate(
            &settings.issuer,
            app.spec.signing.key_size,
            app.spec.signing.validity_days,
            now,
        )
        .map_err(|source| ServeError::Key {
            app: name.to_owned(),
            source,
        })?;
        Some((pem.key_pem, pem.cert_pem))
    } else {
        None
    };
    let updated = crate::rotation::apply(&secret, step, next, lead, now);
    write_state(dir, &updated).map_err(state_io(dir))?;
    let (keys, _) = crate::rotation::app_keys(&updated, name).map_err(unusable)?;
    tracing::info!(app = %name, step = ?step, path = %dir.display(), "signing key rotation");
    Ok(keys)
}

/// Loads every SAMLApp's key: from its `secretRef` Secret, else from the state directory,
/// generating it there on first use and rotating it there when due.
///
/// # Errors
/// A missing or invalid Secret, an unusable key, or an unwritable state directory.
pub fn load_keys(
    snapshot: &Snapshot,
    state_dir: &Path,
    namespace: &str,
    now: Timestamp,
) -> Result<BTreeMap<String, AppKeys>, ServeError> {
    let mut ring = BTreeMap::new();
    for (name, app) in &snapshot.apps {
        // Refuse what the app asks for before any key is generated, whatever the state dir holds.
        crate::saml::AppSettings::from_app(app).map_err(ServeError::Settings)?;
        let key_error = |source| ServeError::Key {
            app: name.clone(),
            source,
        };
        let key = if let Some(reference) = &app.spec.signing.secret_ref {
            let secret_error = |reason: String| ServeError::Secret {
                app: name.clone(),
                reason,
            };
            let secret = snapshot.secret(reference, namespace).ok_or_else(|| {
                secret_error(format!(
                    "signing Secret {:?} does not exist",
                    reference.name
                ))
            })?;
            let (keys, _) =
                crate::rotation::app_keys(secret, &reference.name).map_err(secret_error)?;
            ring.insert(name.clone(), keys);
            continue;
        } else {
            let dir = state_dir.join(name);
            recover_state(&dir).map_err(state_io(&dir))?;
            if dir.join("tls.key").exists() {
                ring.insert(name.clone(), rotate_state(name, app, &dir, now)?);
                continue;
            }
            let settings = crate::saml::AppSettings::from_app(app).map_err(ServeError::Settings)?;
            let (key, pem) = SigningKey::generate(
                &settings.issuer,
                app.spec.signing.key_size,
                app.spec.signing.validity_days,
                now,
            )
            .map_err(key_error)?;
            let key_path = dir.join("tls.key");
            let cert_path = dir.join("tls.crt");
            std::fs::create_dir_all(&dir).map_err(state_io(&dir))?;
            write_private(&key_path, &pem.key_pem).map_err(state_io(&key_path))?;
            std::fs::write(&cert_path, &pem.cert_pem).map_err(state_io(&cert_path))?;
            tracing::info!(app = %name, fingerprint = key.fingerprint(), path = %dir.display(), "generated signing key");
            key
        };
        ring.insert(name.clone(), AppKeys::single(key));
    }
    Ok(ring)
}

/// How the controller side reaches IAM for `provider`.
pub fn iam_access(
    provider: &IAMProvider,
    snapshot: &Snapshot,
    namespace: &str,
) -> Result<IamAccess, String> {
    let reference = provider
        .spec
        .credentials
        .as_ref()
        .and_then(|c| c.secret_ref.as_ref());
    let keys = match reference {
        None => None,
        Some(reference) => {
            let secret = snapshot
                .secret(reference, namespace)
                .ok_or_else(|| format!("credentials Secret {:?} does not exist", reference.name))?;
            Some(AccessKeys::from_secret(secret, &reference.name)?)
        }
    };
    Ok(IamAccess::for_provider(provider, keys))
}

/// Registers every IAMProvider of `snapshot` as owned by `cluster`; failures (a provider that
/// is not ours included) are logged and counted, not fatal.
pub async fn register_all(
    snapshot: &Snapshot,
    keys: &KeyRing,
    public_url: &str,
    namespace: &str,
    cluster: &str,
    metrics: &Metrics,
) {
    for (name, provider) in &snapshot.providers {
        let outcome = async {
            let app_name = &provider.spec.saml_app;
            let app = snapshot
                .apps
                .get(app_name)
                .ok_or_else(|| format!("SAMLApp {app_name:?} does not exist"))?;
            let app_keys = keys
                .get(app_name)
                .ok_or_else(|| format!("SAMLApp {app_name:?} has no key"))?;
            let metadata = app_metadata(app, &app_keys, public_url).map_err(|e| e.to_string())?;
            let access = iam_access(provider, snapshot, namespace)?;
            let iam = SdkSamlProviders::new(&access).await;
            let owner = registration::owner(cluster, name);
            registration::register(provider, &metadata, &owner, &iam)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        let action = match &outcome {
            Ok(r) => {
                tracing::info!(provider = %name, arn = %r.arn, action = r.plan.label(), metadata_sha256 = %r.metadata_sha256, "IAM SAML provider registered");
                r.plan.label()
            }
            Err(reason) => {
                tracing::error!(provider = %name, %reason, "IAM SAML provider registration failed");
                "error"
            }
        };
        metrics
            .registrations
            .get_or_create(&vec![
                ("provider", name.clone()),
                ("action", action.to_owned()),
            ])
            .inc();
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}

/// Runs standalone mode until SIGINT or SIGTERM.
///
/// # Errors
/// An invalid config directory or key at start, or a listener that cannot be bound.
pub async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let snapshot = load_dir(&options.config)?;
    let keys = Arc::new(KeyRing::default());
    keys.replace(load_keys(
        &snapshot,
        &options.state_dir,
        &options.namespace,
        Timestamp::now(),
    )?);
    tracing::info!(
        apps = snapshot.apps.len(),
        providers = snapshot.providers.len(),
        mappings = snapshot.mappings.len(),
        connections = snapshot.connections.len(),
        "loaded {}",
        options.config.display()
    );
    let bind = |addr: SocketAddr| {
        let serve_error = |source| ServeError::Serve { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(serve_error)?;
        let local = listener.local_addr().map_err(serve_error)?;
        Ok::<_, ServeError>((local, listener))
    };
    let (addr, listener) = bind(options.listen)?;
    let public = options.public_listen.map(bind).transpose()?;
    let public_url = options
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", public.as_ref().map_or(addr, |(a, _)| *a)));
    let sts: Arc<dyn Sts> = Arc::new(SdkSts::in_region(None, options.sts_region.as_deref()).await);
    let store = Arc::new(SharedSnapshot::new(snapshot));
    let state = AppState {
        store: Arc::clone(&store),
        keys: Arc::clone(&keys),
        verifier: Arc::new(TokenVerifier::new(options.config.clone())),
        issuer: Arc::new(Issuer {
            sts,
            cache: CredentialCache::default(),
            cluster: options.cluster_name.clone(),
            pacer: crate::server::pacing::StsPacer::new(crate::pacing::PacerSettings {
                max_wait: options.sts_max_wait,
                ..crate::pacing::PacerSettings::default()
            }),
        }),
        metrics: Arc::new(Metrics::new()),
        clock: Arc::new(SystemClock),
        public_url: public_url.clone(),
        ready: Arc::new(AtomicBool::new(false)),
        login: Arc::new(crate::login::LoginState::new(
            options.namespace.clone(),
            Some(
                crate::login::key_from_state_dir(&options.state_dir)
                    .map_err(ServeError::SessionKey)?,
            ),
        )),
        injection: Arc::new(crate::webhook::Injection {
            credentials_uri: options.credentials_uri.clone(),
            ..crate::webhook::Injection::default()
        }),
    };
    state
        .login
        .set_trusted_proxies(crate::login::client::TrustedProxies::new(
            options.trusted_proxies.clone(),
        ));
    tokio::spawn(sync_loop(options.clone(), state.clone()));
    let limits_for = |listener| options.limits.for_listener(&state.metrics, listener);
    let handle = shutdown_on_signal();
    let mut servers = tokio::task::JoinSet::new();
    // The sign-in pages move to the public listener when there is one.
    let app = match &public {
        Some(_) => internal_router(state.clone()),
        None => router(state.clone()),
    };
    if let Some((public_addr, listener)) = public {
        tracing::info!(addr = %public_addr, "serving the sign-in pages and the metadata (public)");
        let (app, limits, handle) = (
            public_router(state.clone()),
            limits_for("public"),
            handle.clone(),
        );
        servers.spawn(async move {
            serve_on(listener, app, None, &limits, handle)
                .await
                .map_err(|source| ServeError::Serve {
                    addr: public_addr,
                    source,
                })
        });
    }
    tracing::info!(%addr, %public_url, "serving");
    let limits = limits_for("http");
    servers.spawn({
        let handle = handle.clone();
        async move {
            serve_on(listener, app, None, &limits, handle)
                .await
                .map_err(|source| ServeError::Serve { addr, source })
        }
    });
    // The first listener to fail stops the server; on a signal they all drain and end.
    while let Some(done) = servers.join_next().await {
        if let Ok(Err(e)) = done {
            handle.shutdown();
            return Err(e);
        }
    }
    Ok(())
}

/// Roles holding a revocation policy written by this process, by the IAMProvider whose access
/// wrote it. (After a restart, policies written before are left to expire harmlessly: a deny
/// on sessions issued before a past instant matches no new session.)
type Revoked = std::collections::BTreeSet<(String, String)>;

/// Revokes, in IAM, the sessions of every mapping or subject that `after` no longer has.
async fn revoke_removed(
    before: &Snapshot,
    after: &Snapshot,
    namespace: &str,
    revoked: &mut Revoked,
) {
    for (provider_name, revocation) in
        crate::revocation::between(&before.mappings, &after.mappings, Timestamp::now())
    {
        let Some(provider) = before.providers.get(&provider_name) else {
            tracing::error!(provider = %provider_name, policy = %revocation.policy_name, "cannot revoke: the IAMProvider does not exist");
            continue;
        };
        let access = match iam_access(provider, before, namespace) {
            Ok(a) => a,
            Err(reason) => {
                tracing::error!(provider = %provider_name, %reason, "cannot revoke: no IAM access");
                continue;
            }
        };
        let iam = SdkSamlProviders::new(&access).await.role_policies();
        match crate::aws::revoke(&iam, &revocation).await {
            Ok(()) => {
                tracing::info!(provider = %provider_name, role = %revocation.role_name, policy = %revocation.policy_name, until = %revocation.remove_after, "revoked the sessions of removed subjects");
                revoked.insert((provider_name, revocation.role_name));
            }
            Err(e) => {
                tracing::error!(provider = %provider_name, reason = e.reason(), error = %e, "revocation failed");
            }
        }
    }
}

/// Removes the revocation policies whose sessions have all expired.
async fn sweep_revoked(snapshot: &Snapshot, namespace: &str, revoked: &mut Revoked) {
    let mut done = Vec::new();
    for (provider_name, role) in revoked.iter() {
        let Some(access) = snapshot
            .providers
            .get(provider_name)
            .and_then(|p| iam_access(p, snapshot, namespace).ok())
        else {
            continue;
        };
        let iam = SdkSamlProviders::new(&access).await.role_policies();
        match crate::aws::sweep(&iam, role, Timestamp::now()).await {
            Ok(removed) => {
                for policy in &removed {
                    tracing::info!(%role, %policy, "removed an expired revocation policy");
                }
                let left = crate::aws::RolePolicies::list(&iam, role)
                    .await
                    .map(|names| {
                        names
                            .iter()
                            .any(|n| n.starts_with(crate::revocation::POLICY_PREFIX))
                    });
                if matches!(left, Ok(false)) {
                    done.push((provider_name.clone(), role.clone()));
                }
            }
            Err(e) => tracing::error!(%role, error = %e, "revocation sweep failed"),
        }
    }
    for d in done {
        revoked.remove(&d);
    }
}

/// Registers at start, then reloads and re-registers whenever the files change, and at least
/// every `resync` to repair drift in IAM.
async fn sync_loop(options: ServeOptions, state: AppState) {
    let register = async || {
        let snapshot = state.store.current();
        register_all(
            &snapshot,
            &state.keys,
            &state.public_url,
            &options.namespace,
            options.cluster_name.as_deref().unwrap_or("standalone"),
            &state.metrics,
        )
        .await;
    };
    let mut fingerprint = dir_fingerprint(&options.config);
    let mut revoked = Revoked::new();
    register().await;
    state.ready.store(true, Ordering::Release);
    let mut last_sync = Instant::now();
    loop {
        tokio::time::sleep(options.poll).await;
        let now_fingerprint = dir_fingerprint(&options.config);
        let changed = now_fingerprint != fingerprint;
        if changed {
            fingerprint = now_fingerprint;
            let reloaded = load_dir(&options.config)
                .map_err(|e| e.to_string())
                .and_then(|snapshot| {
                    load_keys(
                        &snapshot,
                        &options.state_dir,
                        &options.namespace,
                        Timestamp::now(),
                    )
                    .map(|keys| (snapshot, keys))
                    .map_err(|e| e.to_string())
                });
            match reloaded {
                Ok((snapshot, keys)) => {
                    tracing::info!("reloaded {}", options.config.display());
                    state.keys.replace(keys);
                    let before = crate::server::replace_snapshot(
                        &state.store,
                        &state.issuer.cache,
                        snapshot.clone(),
                    );
                    // The server refuses from now on; sessions already issued are revoked.
                    revoke_removed(&before, &snapshot, &options.namespace, &mut revoked).await;
                }
                Err(reason) => {
                    tracing::error!(%reason, "config change rejected; still serving the previous resources");
                    continue;
                }
            }
        }
        if changed || last_sync.elapsed() >= options.resync {
            if !changed {
                // A rotation step may be due: Next published, promoted, or Retiring dropped.
                match load_keys(
                    &state.store.current(),
                    &options.state_dir,
                    &options.namespace,
                    Timestamp::now(),
                ) {
                    Ok(keys) => state.keys.replace(keys),
                    Err(e) => {
                        tracing::error!(error = %e, "keys could not be reloaded; still signing with the previous ones")
                    }
                }
            }
            register().await;
            sweep_revoked(&state.store.current(), &options.namespace, &mut revoked).await;
            last_sync = Instant::now();
        }
    }
}
