//! The session key that seals people's sign-in cookies, shared by every server replica: Secret
//! [`SESSION_SECRET`] in the operator namespace. The controller creates it once, with a fresh
//! random key, when it is missing, and never changes or deletes it. A chart render therefore
//! holds no key, so two `helm template` renders (GitOps) are identical and an upgrade keeps the
//! key; a platform team that manages the Secret itself creates it first and it is left alone.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::login::{CookieKey, SESSION_KEY, SESSION_SECRET};
use crate::store::index::LOGIN_SECRET_LABEL;

/// What [`ensure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKey {
    /// The Secret exists (made by the chart, the platform team, or an earlier run).
    Present,
    /// It was missing and is now created.
    Created,
}

/// PURE: the Secret holding `material`.
pub fn secret(namespace: &str, material: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(SESSION_SECRET.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                (LOGIN_SECRET_LABEL.to_owned(), "true".to_owned()),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "rolegate".to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            SESSION_KEY.to_owned(),
            ByteString(material.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// Creates the session key Secret in `namespace` unless it exists.
///
/// # Errors
/// The API server refused the read or the create (other than AlreadyExists: another replica
/// or the platform team was first, which is fine).
pub async fn ensure(client: Client, namespace: &str) -> Result<SessionKey, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    if secrets.get_opt(SESSION_SECRET).await?.is_some() {
        return Ok(SessionKey::Present);
    }
    let material = CookieKey::generate_material().map_err(|e| {
        kube::Error::Service(std::io::Error::other(format!("no session key: {e}")).into())
    })?;
    match secrets
        .create(&PostParams::default(), &secret(namespace, &material))
        .await
    {
        Ok(_) => Ok(SessionKey::Created),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(SessionKey::Present),
        Err(e) => Err(e),
    }
}
