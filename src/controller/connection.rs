//! Connection: `Ready` says whether the spec is usable: exactly one of `oidc`, `kubernetes` and
//! `static`, and for `oidc` an https issuer. Nothing outside the cluster changes.

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Context, Error, condition, find};
use crate::crd::{Connection, ConnectionKind, ConnectionStatus};

/// PURE: the status of `connection`.
pub fn plan(connection: &Connection, now: Timestamp) -> ConnectionStatus {
    let previous = connection.status.clone().unwrap_or_default().conditions;
    let generation = connection.metadata.generation;
    let verdict = match connection.spec.kind() {
        Err(reason) => Err(reason),
        Ok(ConnectionKind::Oidc(o)) if !o.issuer.starts_with("https://") => Err(format!(
            "oidc issuer {:?} must be an https:// URL",
            o.issuer
        )),
        Ok(ConnectionKind::Oidc(_)) => {
            Ok("oidc: id_tokens are verified through the issuer's discovery document and JWKS")
        }
        Ok(ConnectionKind::Kubernetes(_)) => Ok(
            "kubernetes: service-account tokens are verified by TokenReview (in a cluster) or the JWKS (standalone)",
        ),
        Ok(ConnectionKind::Static(_)) => Ok("static: users from the Secret"),
    };
    let ready = match verdict {
        Ok(message) => condition(&previous, "Ready", true, "Valid", message, generation, now),
        Err(reason) => condition(
            &previous,
            "Ready",
            false,
            "InvalidSpec",
            reason,
            generation,
            now,
        ),
    };
    ConnectionStatus {
        observed_generation: generation,
        conditions: vec![ready],
    }
}

/// Reconciles one Connection.
///
/// # Errors
/// API failures; the controller retries them with backoff.
pub async fn reconcile(connection: Arc<Connection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = async {
        let status = plan(&connection, ctx.clock.now());
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
        Ok(Action::await_change())
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
