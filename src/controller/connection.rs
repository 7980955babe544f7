//! Connection: `Ready` says whether the spec is usable: exactly one of `oidc`, `kubernetes` and
//! `static`; for `oidc` an https issuer (or http on loopback); and for a referenced Secret
//! (client secret, static users) that the server can read it: in the operator namespace,
//! labelled `rolegate.dev/login`, with the key it needs. Nothing outside the cluster changes.

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Context, Error, condition, find};
use crate::crd::{Connection, ConnectionKind, ConnectionStatus, SecretRef};
use crate::store::index::LOGIN_SECRET_LABEL;

/// The Secret a Connection refers to, as found.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// `(namespace, name)` of the reference, and the Secret if it exists.
    pub secret: Option<((String, String), Option<Secret>)>,
}

fn secret_ref(connection: &Connection) -> Option<&SecretRef> {
    match connection.spec.kind().ok()? {
        ConnectionKind::Oidc(o) => o.client_secret_ref.as_ref(),
        ConnectionKind::Static(s) => Some(&s.secret_ref),
        ConnectionKind::Kubernetes(_) => None,
    }
}

/// Whether `connection` refers to the operator-namespace Secret `name` (a Secret event
/// re-evaluates it).
pub fn refers_to(connection: &Connection, name: &str) -> bool {
    secret_ref(connection).is_some_and(|r| r.name == name)
}

/// Replaces quoted text of a parser's message, so that no value from a Secret reaches a status.
fn without_values(message: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in message.chars() {
        match (c, quoted) {
            ('"' | '`', false) => {
                quoted = true;
                out.push_str("\"…\"");
            }
            ('"' | '`', true) => quoted = false,
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}

fn check_secret(
    kind: &ConnectionKind<'_>,
    observed: &Observed,
    operator_namespace: &str,
) -> Result<Option<String>, (&'static str, String)> {
    let Some(((namespace, name), secret)) = &observed.secret else {
        return Ok(None);
    };
    let what = format!("Secret {namespace}/{name}");
    if namespace != operator_namespace {
        return Err((
            "SecretOutsideNamespace",
            format!(
                "{what} must be in the operator namespace {operator_namespace}, where the server reads it"
            ),
        ));
    }
    let Some(secret) = secret else {
        return Err(("SecretNotFound", format!("{what} does not exist")));
    };
    if !secret.labels().contains_key(LOGIN_SECRET_LABEL) {
        return Err((
            "SecretNotLabelled",
            format!(
                "{what} has no label {LOGIN_SECRET_LABEL}, so the server does not read it; label it {LOGIN_SECRET_LABEL}=true"
            ),
        ));
    }
    match kind {
        ConnectionKind::Oidc(_) => {
            if crate::store::secret_value(secret, "clientSecret").is_none() {
                return Err(("SecretKeyMissing", format!("{what} has no clientSecret")));
            }
            Ok(None)
        }
        ConnectionKind::Static(_) => {
            let users = crate::login::users::users_from_secret(secret, &what)
                .map_err(|e| ("InvalidUsers", without_values(&e)))?;
            let mut names = std::collections::BTreeSet::new();
            for user in &users {
                if !names.insert(user.username.as_str()) {
                    return Err((
                        "InvalidUsers",
                        format!("{what}: user {:?} is listed twice", user.username),
                    ));
                }
                let hash = &user.bcrypt_hash;
                let looks_bcrypt = hash.len() == 60
                    && ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p));
                if !looks_bcrypt {
                    return Err((
                        "InvalidUsers",
                        format!(
                            "{what}: the bcryptHash of user {:?} is not a bcrypt hash",
                            user.username
                        ),
                    ));
                }
            }
            Ok(Some(format!("static: {} users from {what}", users.len())))
        }
        ConnectionKind::Kubernetes(_) => Ok(None),
    }
}

/// PURE: the status of `connection`, given the Secret it refers to.
pub fn plan(
    connection: &Connection,
    observed: &Observed,
    operator_namespace: &str,
    now: Timestamp,
) -> ConnectionStatus {
    let previous = connection.status.clone().unwrap_or_default().conditions;
    let generation = connection.metadata.generation;
    let verdict = match connection.spec.kind() {
        Err(reason) => Err(("InvalidSpec", reason)),
        Ok(ConnectionKind::Oidc(o)) if crate::login::oidc::check_issuer(&o.issuer).is_err() => {
            Err((
                "InvalidSpec",
                format!(
                    "oidc issuer {:?} must be an https:// URL (or http:// to a loopback address)",
                    o.issuer
                ),
            ))
        }
        Ok(kind) => check_secret(&kind, observed, operator_namespace).map(|m| {
            m.unwrap_or_else(|| match kind {
                ConnectionKind::Oidc(_) => "oidc: id_tokens are verified through the issuer's discovery document and JWKS".into(),
                ConnectionKind::Kubernetes(_) => "kubernetes: service-account tokens are verified by TokenReview (in a cluster) or the JWKS (standalone)".into(),
                ConnectionKind::Static(_) => "static: users from the Secret".into(),
            })
        }),
    };
    let ready = match verdict {
        Ok(message) => condition(&previous, "Ready", true, "Valid", message, generation, now),
        Err((reason, message)) => {
            condition(&previous, "Ready", false, reason, message, generation, now)
        }
    };
    ConnectionStatus {
        observed_generation: generation,
        conditions: vec![ready],
    }
}

/// Gathers the Secret `connection` refers to.
async fn gather(connection: &Connection, ctx: &Context) -> Result<Observed, Error> {
    let Some(reference) = secret_ref(connection) else {
        return Ok(Observed::default());
    };
    let namespace = reference
        .namespace
        .clone()
        .unwrap_or_else(|| ctx.namespace.clone());
    let secret = if namespace == ctx.namespace {
        Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(&reference.name)
            .await?
    } else {
        None
    };
    Ok(Observed {
        secret: Some(((namespace, reference.name.clone()), secret)),
    })
}

/// Reconciles one Connection.
///
/// # Errors
/// API failures; the controller retries them with backoff.
pub async fn reconcile(connection: Arc<Connection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = async {
        let observed = gather(&connection, &ctx).await?;
        let status = plan(&connection, &observed, &ctx.namespace, ctx.clock.now());
        let current = connection.status.clone().unwrap_or_default();
        if status != current {
            Api::<Connection>::all(ctx.client.clone())
                .patch_status(
                    &connection.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&serde_json::json!({"status": status})),
                )
                .await?;
            let was = find(&current.conditions, "Ready").map(|c| c.status.clone());
            if let Some(ready) = find(&status.conditions, "Ready")
                && was.as_deref() != Some(ready.status.as_str())
            {
                ctx.event(
                    connection.as_ref(),
                    ready.status != "True",
                    &ready.reason,
                    ready.message.clone(),
                )
                .await;
            }
        }
        ctx.succeeded(&format!("Connection/{}", connection.name_any()));
        // Secrets are not watched by this controller: look again now and then.
        Ok(Action::requeue(ctx.resync))
    }
    .await;
    ctx.observe("Connection", started, result.as_ref().map(|_| ()));
    result
}

/// Retries a failed reconcile with exponential backoff.
pub fn error_policy(connection: Arc<Connection>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(connection = %connection.name_any(), %error, "reconcile failed");
    Action::requeue(ctx.backoff(&format!("Connection/{}", connection.name_any())))
}
