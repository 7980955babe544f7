//! The identity provider's per-app signing keys, and the documents built with them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::crd::SAMLApp;
use crate::keys::SigningKey;
use crate::saml::{self, AppSettings, SamlError, Signer as _};

/// The keys of one SAMLApp: the one that signs, and every certificate published in its
/// metadata (DER, end of validity, place in the rotation).
#[derive(Debug, Clone)]
pub struct AppKeys {
    /// Signs assertions.
    pub active: Arc<SigningKey>,
    /// Published in the metadata, the Active one first.
    pub published: Vec<(Vec<u8>, jiff::Timestamp, crate::crd::CertificateState)>,
}

impl AppKeys {
    /// One key that signs and is the only one published.
    pub fn single(key: SigningKey) -> Self {
        let published = vec![(
            key.certificate_der().to_vec(),
            key.not_after(),
            crate::crd::CertificateState::Active,
        )];
        Self {
            active: Arc::new(key),
            published,
        }
    }
}

/// Keys of every SAMLApp, swapped as resources change.
#[derive(Debug, Default)]
pub struct KeyRing(RwLock<BTreeMap<String, AppKeys>>);

impl KeyRing {
    /// The keys of `app`.
    pub fn get(&self, app: &str) -> Option<AppKeys> {
        match self.0.read() {
            Ok(g) => g.get(app).cloned(),
            Err(p) => p.into_inner().get(app).cloned(),
        }
    }

    /// Replaces every app's keys.
    pub fn replace(&self, keys: BTreeMap<String, AppKeys>) {
        match self.0.write() {
            Ok(mut g) => *g = keys,
            Err(p) => *p.into_inner() = keys,
        }
    }
}

/// The Secret a SAMLApp without `secretRef` keeps its key in, in the operator namespace.
pub fn managed_secret_name(app: &str) -> String {
    format!("{app}-signing")
}

/// The single sign-on URL of `app` under `public_url`.
pub fn login_url(public_url: &str, app: &str) -> String {
    format!("{}/samlp/{app}", public_url.trim_end_matches('/'))
}

/// The metadata URL of `app` under `public_url`.
pub fn metadata_url(public_url: &str, app: &str) -> String {
    format!("{}/samlp/metadata/{app}", public_url.trim_end_matches('/'))
}

/// The metadata document of `app`, listing every published certificate.
///
/// # Errors
/// Settings rolegate refuses.
pub fn app_metadata(app: &SAMLApp, keys: &AppKeys, public_url: &str) -> Result<String, SamlError> {
    let settings = AppSettings::from_app(app)?;
    let certs: Vec<&[u8]> = keys
        .published
        .iter()
        .map(|(der, _, _)| der.as_slice())
        .collect();
    let name = app.metadata.name.as_deref().unwrap_or_default();
    Ok(saml::metadata(
        &settings.issuer,
        &certs,
        &login_url(public_url, name),
        &settings.name_id_format,
    ))
}

/// The keys of every SAMLApp whose signing Secret (its `secretRef`, or the managed
/// `<app>-signing` in `namespace`) is in `snapshot`. Apps without a usable key are left out and
/// logged: the server answers 503 for them until the controller has made their key.
pub fn keys_from_secrets(
    snapshot: &crate::store::Snapshot,
    namespace: &str,
) -> BTreeMap<String, AppKeys> {
    let mut ring = BTreeMap::new();
    for (name, app) in &snapshot.apps {
        let reference =
            app.spec
                .signing
                .secret_ref
                .clone()
                .unwrap_or_else(|| crate::crd::SecretRef {
                    name: managed_secret_name(name),
                    namespace: None,
                });
        let keys = snapshot
            .secret(&reference, namespace)
            .ok_or_else(|| format!("Secret {} is not in the index", reference.name))
            .and_then(|secret| crate::rotation::app_keys(secret, &reference.name));
        match keys {
            Ok((keys, _)) => {
                ring.insert(name.clone(), keys);
            }
            Err(reason) => tracing::warn!(app = %name, %reason, "SAMLApp has no signing key yet"),
        }
    }
    ring
}
