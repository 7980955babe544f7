//! In a cluster: an in-memory index of the four kinds, Namespaces and the operator namespace's
//! Secrets, fed by watches (reflectors). The server reads snapshots of it and never asks the API
//! server per request.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::Snapshot;
use crate::crd::{Connection, IAMProvider, RoleMapping, SAMLApp};

/// The label that makes a Secret of the operator namespace visible to the server besides the
/// `kubernetes.io/tls` signing Secrets: the session key, OIDC client secrets and static users.
pub const LOGIN_SECRET_LABEL: &str = "rolegate.dev/login";

/// Readers of every watched kind.
#[derive(Clone)]
pub struct Index {
    apps: Store<SAMLApp>,
    providers: Store<IAMProvider>,
    mappings: Store<RoleMapping>,
    connections: Store<Connection>,
    namespaces: Store<Namespace>,
    secrets: Store<Secret>,
    service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    login_secrets: Store<Secret>,
    /// Notified on every change of any watched object.
    pub changed: Arc<Notify>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").finish_non_exhaustive()
    }
}

fn watch<K>(api: Api<K>, config: watcher::Config, changed: Arc<Notify>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config).default_backoff().reflect(writer);
    tokio::spawn(async move {
        stream
            .for_each(|event| {
                if let Err(e) = &event {
                    tracing::warn!(error = %e, "watch failed; retrying");
                }
                changed.notify_one();
                async {}
            })
            .await;
    });
    reader
}

impl Index {
    /// Starts the watches. Secrets are watched in the operator namespace only: those of type
    /// `kubernetes.io/tls`, and those labelled [`LOGIN_SECRET_LABEL`].
    pub fn start(client: &Client, namespace: &str) -> Self {
        let changed = Arc::new(Notify::new());
        let config = watcher::Config::default;
        Self {
            apps: watch(Api::all(client.clone()), config(), Arc::clone(&changed)),
            providers: watch(Api::all(client.clone()), config(), Arc::clone(&changed)),
            mappings: watch(Api::all(client.clone()), config(), Arc::clone(&changed)),
            connections: watch(Api::all(client.clone()), config(), Arc::clone(&changed)),
            namespaces: watch(Api::all(client.clone()), config(), Arc::clone(&changed)),
            secrets: watch(
                Api::namespaced(client.clone(), namespace),
                config().fields("type=kubernetes.io/tls"),
                Arc::clone(&changed),
            ),
            // Service accounts are many and only their annotations matter: an
            // `Api<PartialObjectMeta<_>>` watches metadata only.
            service_accounts: watch(Api::all(client.clone()), config(), Arc::clone(&changed)),
            login_secrets: watch(
                Api::namespaced(client.clone(), namespace),
                config().labels(LOGIN_SECRET_LABEL),
                Arc::clone(&changed),
            ),
            changed,
        }
    }

    /// Waits until every watch has listed once.
    pub async fn ready(&self) {
        let _ = tokio::join!(
            self.apps.wait_until_ready(),
            self.providers.wait_until_ready(),
            self.mappings.wait_until_ready(),
            self.connections.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.service_accounts.wait_until_ready(),
            self.login_secrets.wait_until_ready(),
        );
    }

    /// The current state as a snapshot.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            apps: self
                .apps
                .state()
                .iter()
                .map(|a| (a.name_any(), (**a).clone()))
                .collect(),
            providers: self
                .providers
                .state()
                .iter()
                .map(|p| (p.name_any(), (**p).clone()))
                .collect(),
            mappings: self
                .mappings
                .state()
                .iter()
                .map(|m| (**m).clone())
                .collect(),
            connections: self
                .connections
                .state()
                .iter()
                .map(|c| (c.name_any(), (**c).clone()))
                .collect(),
            namespaces: self
                .namespaces
                .state()
                .iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect(),
            secrets: self
                .secrets
                .state()
                .iter()
                .chain(self.login_secrets.state().iter())
                .map(|s| {
                    (
                        (s.namespace().unwrap_or_default(), s.name_any()),
                        (**s).clone(),
                    )
                })
                .collect(),
            service_account_roles: self
                .service_accounts
                .state()
                .iter()
                .filter_map(|sa| {
                    let role = sa.annotations().get(crate::webhook::ROLE_ANNOTATION)?;
                    Some((
                        (sa.namespace().unwrap_or_default(), sa.name_any()),
                        role.clone(),
                    ))
                })
                .collect(),
            subject_index: std::sync::OnceLock::new(),
        }
    }
}

/// Keeps `apply` fed with fresh snapshots: once after the first list, then after every burst of
/// changes (coalesced for `settle`).
pub async fn follow(index: Index, settle: Duration, mut apply: impl FnMut(Snapshot) + Send) {
    index.ready().await;
    loop {
        apply(index.snapshot());
        index.changed.notified().await;
        tokio::time::sleep(settle).await;
    }
}
