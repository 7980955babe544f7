//! RoleMapping: `Accepted` with the policy core's reason, the resolved provider ARN, and a
//! suggested trust policy. A finalizer (`rolegate.dev/revoke`) lets the controller see the
//! delete: with `revokeOnDelete`, it revokes the sessions already issued to the mapping's
//! subjects with an inline deny on the role (see `crate::revocation`), records the policy on
//! the IAMProvider (annotation `revoke.rolegate.dev/<policy>`) so the IAMProvider's resync
//! removes it once those sessions have expired, and reports both in Events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};

use super::{Context, Error, condition, find};
use crate::crd::{IAMProvider, RoleMapping, RoleMappingStatus, SAMLApp, SubjectKind};
use crate::policy::{self, RequestContext, Subject, trust_policy};
use crate::store::Snapshot;

/// What a RoleMapping's status is computed from.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    /// The IAMProvider it names, if it exists.
    pub provider: Option<IAMProvider>,
    /// Labels of its namespace.
    pub namespace_labels: BTreeMap<String, String>,
    /// The provider's SAMLApp, if it exists.
    pub app: Option<SAMLApp>,
}

/// PURE: the status of `mapping` given what was gathered.
pub fn plan(mapping: &RoleMapping, gathered: &Gathered, now: Timestamp) -> RoleMappingStatus {
    let namespace = mapping.namespace().unwrap_or_default();
    let mut snapshot = Snapshot::default();
    if let Some(p) = &gathered.provider {
        snapshot
            .providers
            .insert(mapping.spec.provider.clone(), p.clone());
    }
    snapshot
        .namespaces
        .insert(namespace.clone(), gathered.namespace_labels.clone());
    let previous = mapping.status.clone().unwrap_or_default().conditions;
    let generation = mapping.metadata.generation;

    // The tenant guard first, then every named workload or user through AWS's session rules.
    let outcome = policy::admit(mapping, &snapshot)
        .map(|_| ())
        .and_then(|()| {
            mapping.spec.subjects.iter().try_for_each(|s| {
                let subject = match s.kind {
                    SubjectKind::ServiceAccount => Subject::ServiceAccount {
                        namespace: &namespace,
                        name: &s.name,
                    },
                    SubjectKind::User => Subject::Person {
                        connection: s.connection.as_deref().unwrap_or_default(),
                        user: &s.name,
                        groups: &[],
                    },
                    // A group's members are only known at sign-in.
                    SubjectKind::Group => return Ok(()),
                };
                let ctx = RequestContext {
                    pod: Some("pod"),
                    pod_uid: Some("00000000-0000-0000-0000-000000000000"),
                    cluster: None,
                };
                policy::grant(mapping, &subject, &ctx, &snapshot).map(|_| ())
            })
        });
    match outcome {
        Ok(()) => {
            let provider_arn = gathered
                .provider
                .as_ref()
                .map(IAMProvider::provider_arn)
                .unwrap_or_default();
            let audience = gathered
                .app
                .as_ref()
                .map_or_else(crate::crd::SAMLAppSpec::default_audience, |a| {
                    a.spec.audience.clone()
                });
            let subjects: Vec<String> = mapping
                .spec
                .subjects
                .iter()
                .filter_map(|s| match s.kind {
                    SubjectKind::ServiceAccount => {
                        Some(format!("system:serviceaccount:{namespace}:{}", s.name))
                    }
                    SubjectKind::User => Some(s.name.clone()),
                    SubjectKind::Group => None,
                })
                .collect();
            RoleMappingStatus {
                granted_role: Some(mapping.spec.role_arn.clone()),
                granted_subjects: crate::revocation::saml_subs(mapping).into_iter().collect(),
                trust_policy: Some(trust_policy(&provider_arn, &audience, &subjects)),
                provider_arn: Some(provider_arn),
                observed_generation: generation,
                conditions: vec![condition(
                    &previous,
                    "Accepted",
                    true,
                    "Accepted",
                    format!(
                        "{} may be assumed through IAMProvider {:?}",
                        mapping.spec.role_arn, mapping.spec.provider
                    ),
                    generation,
                    now,
                )],
            }
        }
        Err(denial) => RoleMappingStatus {
            // Sessions already issued stay revocable while the mapping is refused.
            granted_role: mapping.status.as_ref().and_then(|s| s.granted_role.clone()),
            granted_subjects: mapping
                .status
                .as_ref()
                .map(|s| s.granted_subjects.clone())
                .unwrap_or_default(),
            provider_arn: None,
            trust_policy: None,
            observed_generation: generation,
            conditions: vec![condition(
                &previous,
                "Accepted",
                false,
                denial.reason(),
                denial.to_string(),
                generation,
                now,
            )],
        },
    }
}

/// PURE: the `saml:sub` values the last accepted status granted on a role that `status` no
/// longer grants them (all of them when the role changed), with that role.
pub fn dropped_subjects(
    previous: &RoleMappingStatus,
    status: &RoleMappingStatus,
) -> Option<(String, std::collections::BTreeSet<String>)> {
    let role = previous.granted_role.clone()?;
    let kept: std::collections::BTreeSet<&String> = if status.granted_role.as_ref() == Some(&role) {
        status.granted_subjects.iter().collect()
    } else {
        std::collections::BTreeSet::new()
    };
    let dropped: std::collections::BTreeSet<String> = previous
        .granted_subjects
        .iter()
        .filter(|s| !kept.contains(s))
        .cloned()
        .collect();
    (!dropped.is_empty()).then_some((role, dropped))
}

/// Reads what the status depends on.
async fn gather(mapping: &RoleMapping, ctx: &Context) -> Result<Gathered, Error> {
    let provider = Api::<IAMProvider>::all(ctx.client.clone())
        .get_opt(&mapping.spec.provider)
        .await?;
    let namespace = mapping.namespace().unwrap_or_default();
    let namespace_labels = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(&namespace)
        .await?
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    let app = match &provider {
        Some(p) => {
            Api::<SAMLApp>::all(ctx.client.clone())
                .get_opt(&p.spec.saml_app)
                .await?
        }
        None => None,
    };
    Ok(Gathered {
        provider,
        namespace_labels,
        app,
    })
}

/// The finalizer that holds a RoleMapping until its subjects' sessions were revoked.
pub const FINALIZER: &str = "rolegate.dev/revoke";

/// Annotation prefix on an IAMProvider naming a revocation policy still on a role:
/// `revoke.rolegate.dev/<policy name>: <role name> <remove-after, Unix seconds>`.
pub const REVOCATION_ANNOTATION: &str = "revoke.rolegate.dev/";

/// Reconciles one RoleMapping through its finalizer.
///
/// # Errors
/// API and IAM failures; the controller retries them with backoff.
pub async fn reconcile(mapping: Arc<RoleMapping>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let api = Api::<RoleMapping>::namespaced(
        ctx.client.clone(),
        &mapping.namespace().unwrap_or_default(),
    );
    let result = finalizer(&api, FINALIZER, mapping, |event| async {
        match event {
            Finalizer::Apply(m) => reconcile_inner(&m, &ctx).await,
            Finalizer::Cleanup(m) => revoke_deleted(&m, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.observe("RoleMapping", started, result.as_ref().map(|_| ()));
    result
}

/// The mapping is being deleted: revoke its subjects' sessions, unless `revokeOnDelete` is
/// off or there is nothing to revoke. A failure keeps the finalizer (and says why in a Warning
/// Event naming the IAM action), so the delete waits until the deny is in place.
async fn revoke_deleted(mapping: &RoleMapping, ctx: &Context) -> Result<Action, Error> {
    if !mapping.spec.revoke_on_delete {
        return Ok(Action::await_change());
    }
    let subjects = crate::revocation::removed_subjects(mapping, None);
    revoke_subjects(mapping, &mapping.spec.role_arn, &subjects, ctx).await?;
    Ok(Action::await_change())
}

async fn reconcile_inner(mapping: &RoleMapping, ctx: &Context) -> Result<Action, Error> {
    let gathered = gather(mapping, ctx).await?;
    let status = plan(mapping, &gathered, ctx.clock.now());
    let current = mapping.status.clone().unwrap_or_default();
    if mapping.spec.revoke_on_delete
        && let Some((role, subjects)) = dropped_subjects(&current, &status)
    {
        revoke_subjects(mapping, &role, &subjects, ctx).await?;
    }
    if status != current {
        let api = Api::<RoleMapping>::namespaced(
            ctx.client.clone(),
            &mapping.namespace().unwrap_or_default(),
        );
        let patch = serde_json::json!({"status": status});
        api.patch_status(
            &mapping.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        let was =
            find(&current.conditions, "Accepted").map(|c| (c.status.clone(), c.reason.clone()));
        if let Some(now) = find(&status.conditions, "Accepted")
            && was.as_ref() != Some(&(now.status.clone(), now.reason.clone()))
        {
            ctx.event(
                mapping,
                now.status != "True",
                &now.reason,
                now.message.clone(),
            )
            .await;
        }
    }
    ctx.succeeded(&key(mapping));
    Ok(Action::requeue(std::time::Duration::from_secs(3600)))
}

/// Revokes, on `role_arn`, the sessions of `subjects` issued before now: the deny policy, the
/// IAMProvider annotation the sweep reads, and Events. Nothing to revoke is not an error.
async fn revoke_subjects(
    mapping: &RoleMapping,
    role_arn: &str,
    subjects: &std::collections::BTreeSet<String>,
    ctx: &Context,
) -> Result<(), Error> {
    let now = ctx.clock.now();
    let Some(revocation) =
        crate::revocation::revocation(role_arn, subjects, now, mapping.spec.session_duration)
    else {
        return Ok(());
    };
    let providers = Api::<IAMProvider>::all(ctx.client.clone());
    let Some(provider) = providers.get_opt(&mapping.spec.provider).await? else {
        ctx.event(
            mapping,
            true,
            "NotRevoked",
            format!(
                "IAMProvider {:?} does not exist, so the sessions of {} on {} could not be revoked",
                mapping.spec.provider,
                subjects.iter().cloned().collect::<Vec<_>>().join(", "),
                role_arn
            ),
        )
        .await;
        return Ok(());
    };
    let access = super::iamprovider::access(ctx, &provider).await?;
    let iam = ctx.iam.role_policies(&access).await;
    if let Err(e) = crate::aws::revoke(iam.as_ref(), &revocation).await {
        let reason = e.reason();
        let message = format!(
            "cannot revoke the sessions of {} (revokeOnDelete): {e}",
            subjects.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        ctx.event(mapping, true, reason, message.clone()).await;
        return Err(Error::Refused {
            reason: reason.to_owned(),
            message,
        });
    }
    let until = revocation.remove_after.strftime("%Y-%m-%dT%H:%M:%SZ");
    let message = format!(
        "revoked the sessions of {} on {} issued before {}: inline policy {} stays until {until}",
        subjects.iter().cloned().collect::<Vec<_>>().join(", "),
        role_arn,
        now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        revocation.policy_name,
    );
    let patch = serde_json::json!({"metadata": {"annotations": {
        format!("{REVOCATION_ANNOTATION}{}", revocation.policy_name):
            format!("{} {}", revocation.role_name, revocation.remove_after.as_second()),
    }}});
    providers
        .patch(
            &provider.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    ctx.event(mapping, false, "Revoked", message.clone()).await;
    ctx.event(&provider, false, "Revoked", message).await;
    Ok(())
}

fn key(mapping: &RoleMapping) -> String {
    format!(
        "RoleMapping/{}/{}",
        mapping.namespace().unwrap_or_default(),
        mapping.name_any()
    )
}

/// Retries a failed reconcile with exponential backoff.
pub fn error_policy(mapping: Arc<RoleMapping>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(mapping = %key(&mapping), %error, "reconcile failed");
    Action::requeue(ctx.backoff(&key(&mapping)))
}

#[cfg(test)]
mod tests;
