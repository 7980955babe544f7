//! IAMProvider: the SAMLApp's metadata registered in IAM and kept there. Drift is repaired on a
//! periodic resync, `providerName` is immutable, and a finalizer honours `deletionPolicy`. Only
//! providers this IAMProvider owns are written (see `crate::registration`), and the IAM access
//! keys are read only from the controller-only Secrets namespace.

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};

use super::samlapp::managed_secret_name;
use super::{Context, Error, condition};
use crate::aws::sdk::{AccessKeys, IamAccess};
use crate::crd::{DeletionPolicy, IAMProvider, IAMProviderStatus, SAMLApp, SecretRef};
use crate::idp::{AppKeys, app_metadata};
use crate::registration::{self, Deregistration, Plan, Registration, RegistrationError};

/// The finalizer that holds an IAMProvider until `deletionPolicy` was honoured.
pub const FINALIZER: &str = "rolegate.dev/iam-provider";

/// PURE: whether a spec change would silently replace the provider: `providerName` is immutable
/// once a provider was registered.
pub fn renamed(provider: &IAMProvider) -> Option<String> {
    let registered = provider.status.as_ref()?.arn.as_ref()?;
    let wanted = provider.provider_arn();
    (*registered != wanted).then(|| {
        format!("providerName is immutable: {registered} is registered, the spec now asks for {wanted}; recreate the IAMProvider to change it")
    })
}

/// PURE: the status after a registration attempt.
pub fn plan_status(
    provider: &IAMProvider,
    outcome: &Result<Registration, (String, String)>,
    now: Timestamp,
) -> IAMProviderStatus {
    let mut status = provider.status.clone().unwrap_or_default();
    let previous = status.conditions.clone();
    let generation = provider.metadata.generation;
    status.observed_generation = generation;
    match outcome {
        Ok(r) => {
            status.arn = Some(r.arn.clone());
            status.metadata_sha256 = Some(r.metadata_sha256.clone());
            status.last_sync_time = Some(now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            let (reason, message) = match r.plan {
                Plan::Create => ("Created", format!("created {}", r.arn)),
                Plan::Update => ("Updated", format!("updated the metadata of {}", r.arn)),
                Plan::InSync => ("InSync", format!("{} holds the current metadata", r.arn)),
                Plan::Adopt { .. } => (
                    "Adopted",
                    format!(
                        "adopted {}: it is now tagged {} and holds the current metadata",
                        r.arn,
                        registration::OWNER_TAG
                    ),
                ),
            };
            status.conditions = vec![
                condition(
                    &previous,
                    "Ready",
                    true,
                    "Registered",
                    format!("{} is registered", r.arn),
                    generation,
                    now,
                ),
                condition(&previous, "Synced", true, reason, message, generation, now),
            ];
        }
        Err((reason, message)) => {
            // A provider that is not ours is not registered, whatever an older status says.
            let ready = status.arn.is_some()
                && !matches!(reason.as_str(), "ProviderNameImmutable" | "NotOwned");
            status.conditions = vec![
                condition(
                    &previous,
                    "Ready",
                    ready,
                    if ready { "Registered" } else { reason },
                    message.clone(),
                    generation,
                    now,
                ),
                condition(
                    &previous,
                    "Synced",
                    false,
                    reason,
                    message.clone(),
                    generation,
                    now,
                ),
            ];
        }
    }
    if let Some(c) = revoking_condition(provider, &previous, generation, now) {
        status.conditions.push(c);
    }
    status
}

/// PURE: a `Revoking` condition while revocation policies recorded on the provider (by deleted
/// RoleMappings or removed subjects) are still on their roles, naming them and when the last
/// one goes.
fn revoking_condition(
    provider: &IAMProvider,
    previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let prefix = super::rolemapping::REVOCATION_ANNOTATION;
    let (due, _) = crate::revocation::pending(provider.annotations(), prefix, Timestamp::MAX);
    let active: Vec<_> = due.iter().filter(|(_, _, _, at)| *at > now).collect();
    let last = active.iter().map(|(_, _, _, at)| *at).max()?;
    let names: Vec<String> = active
        .iter()
        .map(|(_, role, policy, _)| format!("{policy} on {role}"))
        .collect();
    Some(condition(
        previous,
        "Revoking",
        true,
        "SessionsRevoked",
        format!(
            "{} revocation polic{} in place ({}); the last is removed at {}",
            names.len(),
            if names.len() == 1 { "y" } else { "ies" },
            names.join(", "),
            last.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
        generation,
        now,
    ))
}

async fn read_secret(ctx: &Context, namespace: &str, name: &str) -> Result<Secret, Error> {
    Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::Pending(format!("Secret {namespace}/{name} does not exist")))
}

/// PURE: where the access keys of `provider` are read from, as `(namespace, name)`: only from
/// `secrets_namespace`, whose Secrets the server cannot read. A reference without a namespace
/// points there. A reference into the operator namespace (which the public-facing server reads)
/// or anywhere else is refused before anything is read.
///
/// # Errors
/// [`Error::Refused`] with reason `SecretReadableByServer` or `SecretOutsideNamespace`.
pub fn credentials_secret(
    provider: &IAMProvider,
    operator_namespace: &str,
    secrets_namespace: &str,
) -> Result<Option<(String, String)>, Error> {
    let Some(reference) = provider
        .spec
        .credentials
        .as_ref()
        .and_then(|c| c.secret_ref.as_ref())
    else {
        return Ok(None);
    };
    let namespace = reference.namespace.as_deref().unwrap_or(secrets_namespace);
    let name = &reference.name;
    if namespace == secrets_namespace {
        return Ok(Some((namespace.to_owned(), name.clone())));
    }
    Err(if namespace == operator_namespace {
        Error::Refused {
            reason: "SecretReadableByServer".into(),
            message: format!(
                "credentials Secret {namespace}/{name} is in the operator namespace, whose Secrets the public-facing server can read; move it to namespace {secrets_namespace}, where only the controller reads Secrets"
            ),
        }
    } else {
        Error::Refused {
            reason: "SecretOutsideNamespace".into(),
            message: format!(
                "credentials Secret {namespace}/{name} must be in namespace {secrets_namespace}, the only one whose Secrets the controller reads for IAM"
            ),
        }
    })
}

/// The SAMLApp's signing key, from its `secretRef` or the managed Secret.
async fn app_keys(ctx: &Context, app: &SAMLApp) -> Result<AppKeys, Error> {
    let reference = app
        .spec
        .signing
        .secret_ref
        .clone()
        .unwrap_or_else(|| SecretRef {
            name: managed_secret_name(&app.name_any()),
            namespace: Some(ctx.namespace.clone()),
        });
    let namespace = reference.namespace.as_deref().unwrap_or(&ctx.namespace);
    let secret = read_secret(ctx, namespace, &reference.name).await?;
    crate::rotation::app_keys(&secret, &reference.name)
        .map(|(keys, _)| keys)
        .map_err(Error::Pending)
}

pub(super) async fn access(ctx: &Context, provider: &IAMProvider) -> Result<IamAccess, Error> {
    let keys = match credentials_secret(provider, &ctx.namespace, &ctx.secrets_namespace)? {
        None => None,
        Some((namespace, name)) => {
            let secret = read_secret(ctx, &namespace, &name).await?;
            Some(AccessKeys::from_secret(&secret, &name).map_err(Error::Pending)?)
        }
    };
    Ok(IamAccess::for_provider(provider, keys))
}

/// Gather, register, and write the status. Returns the registration outcome as
/// `(reason, message)` on failure, after the status says so.
async fn apply(provider: &IAMProvider, ctx: &Context) -> Result<Action, Error> {
    let outcome = register(provider, ctx).await;
    let status = plan_status(
        provider,
        &outcome
            .as_ref()
            .map_err(|e| (reason_of(e), e.to_string()))
            .cloned(),
        ctx.clock.now(),
    );
    let api = Api::<IAMProvider>::all(ctx.client.clone());
    if provider.status.as_ref() != Some(&status) {
        api.patch_status(
            &provider.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"status": status})),
        )
        .await?;
    }
    match outcome {
        Ok(r) => {
            if r.plan != Plan::InSync {
                let message = format!("{} {}", r.plan.label(), r.arn);
                ctx.event(
                    provider,
                    false,
                    match r.plan {
                        Plan::Create => "Created",
                        Plan::Adopt { .. } => "Adopted",
                        _ => "Updated",
                    },
                    message,
                )
                .await;
            }
            let next = sweep_revocations(provider, ctx).await?;
            ctx.succeeded(&key(provider));
            let now = ctx.clock.now();
            let wait = next.map_or(ctx.resync, |at| {
                let secs = at.duration_since(now).as_secs().max(1);
                ctx.resync
                    .min(std::time::Duration::from_secs(secs.unsigned_abs()))
            });
            Ok(Action::requeue(wait))
        }
        Err(e) => {
            let was = provider
                .status
                .as_ref()
                .and_then(|s| super::find(&s.conditions, "Synced"))
                .map(|c| c.reason.clone());
            if was.as_deref() != Some(reason_of(&e).as_str()) {
                ctx.event(provider, true, &reason_of(&e), e.to_string())
                    .await;
            }
            Err(e)
        }
    }
}

/// Removes the revocation policies recorded on `provider` whose sessions have all expired,
/// then their annotations; returns when the next one is due.
async fn sweep_revocations(
    provider: &IAMProvider,
    ctx: &Context,
) -> Result<Option<Timestamp>, Error> {
    let now = ctx.clock.now();
    let (due, next) = crate::revocation::pending(
        provider.annotations(),
        super::rolemapping::REVOCATION_ANNOTATION,
        now,
    );
    if due.is_empty() {
        return Ok(next);
    }
    let iam = ctx.iam.role_policies(&access(ctx, provider).await?).await;
    let mut cleared = serde_json::Map::new();
    for (annotation, role, policy, _) in &due {
        iam.delete(role, policy).await.map_err(|e| Error::Refused {
            reason: "RevocationFailed".into(),
            message: format!("iam:DeleteRolePolicy {policy} on role {role:?} failed: {e}"),
        })?;
        cleared.insert(annotation.clone(), serde_json::Value::Null);
        ctx.event(
            provider,
            false,
            "RevocationExpired",
            format!("removed {policy} from role {role}: every session it revoked has expired"),
        )
        .await;
    }
    Api::<IAMProvider>::all(ctx.client.clone())
        .patch(
            &provider.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"metadata": {"annotations": cleared}})),
        )
        .await?;
    Ok(next)
}

fn reason_of(e: &Error) -> String {
    e.label()
}

fn owner(provider: &IAMProvider, ctx: &Context) -> String {
    registration::owner(&ctx.cluster_name, &provider.name_any())
}

async fn register(provider: &IAMProvider, ctx: &Context) -> Result<Registration, Error> {
    if let Some(message) = renamed(provider) {
        return Err(Error::Refused {
            reason: "ProviderNameImmutable".into(),
            message,
        });
    }
    // Before anything is read: keys the server could read are never used.
    credentials_secret(provider, &ctx.namespace, &ctx.secrets_namespace)?;
    let app_name = &provider.spec.saml_app;
    let app = Api::<SAMLApp>::all(ctx.client.clone())
        .get_opt(app_name)
        .await?
        .ok_or_else(|| Error::Pending(format!("SAMLApp {app_name:?} does not exist")))?;
    let keys = app_keys(ctx, &app).await?;
    let metadata =
        app_metadata(&app, &keys, &ctx.public_url).map_err(|e| Error::Pending(e.to_string()))?;
    let iam = ctx.iam.connect(&access(ctx, provider).await?).await;
    Ok(registration::register(provider, &metadata, &owner(provider, ctx), iam.as_ref()).await?)
}

async fn cleanup(provider: &IAMProvider, ctx: &Context) -> Result<Action, Error> {
    let arn = provider.status.as_ref().and_then(|s| s.arn.clone());
    match (provider.spec.deletion_policy, arn) {
        (DeletionPolicy::Delete, Some(arn)) => {
            let iam = ctx.iam.connect(&access(ctx, provider).await?).await;
            match registration::deregister(&arn, &owner(provider, ctx), iam.as_ref()).await {
                Ok(Deregistration::Deleted) => {
                    ctx.event(
                        provider,
                        false,
                        "Deleted",
                        format!("deleted {arn} (deletionPolicy Delete)"),
                    )
                    .await;
                }
                Ok(Deregistration::Gone) => {
                    ctx.event(
                        provider,
                        false,
                        "Deleted",
                        format!("{arn} was already gone from IAM (deletionPolicy Delete)"),
                    )
                    .await;
                }
                // Someone else's provider stays in IAM; the IAMProvider itself goes.
                Err(e @ RegistrationError::NotOwned { .. }) => {
                    ctx.event(provider, true, &e.reason(), e.to_string()).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        (DeletionPolicy::Retain, Some(arn)) => {
            ctx.event(
                provider,
                false,
                "Retained",
                format!("left {arn} in IAM (deletionPolicy Retain)"),
            )
            .await;
        }
        (_, None) => {}
    }
    Ok(Action::await_change())
}

fn key(provider: &IAMProvider) -> String {
    format!("IAMProvider/{}", provider.name_any())
}

/// Reconciles one IAMProvider through its finalizer.
///
/// # Errors
/// API and IAM failures; the controller retries them with backoff.
pub async fn reconcile(provider: Arc<IAMProvider>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let api = Api::<IAMProvider>::all(ctx.client.clone());
    let result = finalizer(&api, FINALIZER, provider, |event| async {
        match event {
            Finalizer::Apply(p) => apply(&p, &ctx).await,
            Finalizer::Cleanup(p) => cleanup(&p, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.observe("IAMProvider", started, result.as_ref().map(|_| ()));
    result
}

/// Retries a failed reconcile with exponential backoff (throttling included).
pub fn error_policy(provider: Arc<IAMProvider>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(provider = %provider.name_any(), %error, "reconcile failed");
    Action::requeue(ctx.backoff(&key(&provider)))
}

#[cfg(test)]
mod tests;
