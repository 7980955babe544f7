//! Where resources come from: a snapshot of every object the server and registration read.
//! Standalone mode fills it from YAML files; in a cluster a watch-fed index will.

pub mod files;
pub mod index;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use k8s_openapi::api::core::v1::Secret;

use crate::crd::{Connection, IAMProvider, RoleMapping, SAMLApp, SecretRef};

/// Every object rolegate reads, at one instant.
///
/// Fill it, then only read it: the first policy decision builds an index of `mappings` by
/// subject ([`crate::policy::SubjectIndex`]) that later decisions reuse. A clone starts without
/// it.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// SAMLApps by name.
    pub apps: BTreeMap<String, SAMLApp>,
    /// IAMProviders by name.
    pub providers: BTreeMap<String, IAMProvider>,
    /// RoleMappings in every namespace.
    pub mappings: Vec<RoleMapping>,
    /// Connections by name.
    pub connections: BTreeMap<String, Connection>,
    /// Namespace labels by namespace name.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Secrets by (namespace, name).
    pub secrets: BTreeMap<(String, String), Secret>,
    /// The `rolegate.dev/role` annotation of service accounts that carry one, by (namespace,
    /// name): the role their pods ask for when several are mapped.
    pub service_account_roles: BTreeMap<(String, String), String>,
    /// `mappings` by the subjects they name, built on first use.
    pub subject_index: OnceLock<crate::policy::SubjectIndex>,
}

impl Clone for Snapshot {
    /// A clone may be changed, so it starts without the subject index.
    fn clone(&self) -> Self {
        Self {
            apps: self.apps.clone(),
            providers: self.providers.clone(),
            mappings: self.mappings.clone(),
            connections: self.connections.clone(),
            namespaces: self.namespaces.clone(),
            secrets: self.secrets.clone(),
            service_account_roles: self.service_account_roles.clone(),
            subject_index: OnceLock::new(),
        }
    }
}

impl Snapshot {
    /// Labels of a namespace, including the `kubernetes.io/metadata.name` label the API server
    /// sets on every namespace.
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self.namespaces.get(namespace).cloned().unwrap_or_default();
        labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
        labels
    }

    /// A Secret by reference, with `default_namespace` when the reference names none.
    pub fn secret(&self, reference: &SecretRef, default_namespace: &str) -> Option<&Secret> {
        let namespace = reference.namespace.as_deref().unwrap_or(default_namespace);
        self.secrets
            .get(&(namespace.to_owned(), reference.name.clone()))
    }
}

/// One value of a Secret, from `data` or `stringData`.
pub fn secret_value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.as_slice())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(String::as_bytes)
        })
}

/// A shared, swappable snapshot. Readers clone the `Arc` and never block writers for long.
#[derive(Debug, Default)]
pub struct SharedSnapshot(RwLock<Arc<Snapshot>>);

impl SharedSnapshot {
    /// A store holding `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self(RwLock::new(Arc::new(snapshot)))
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        match self.0.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the snapshot.
    pub fn replace(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        match self.0.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }
}
