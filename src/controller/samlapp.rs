//! SAMLApp: its signing key, generated into a Secret in the operator namespace when no
//! `secretRef` is given (a user's Secret is never written), and its status: issuer, URLs,
//! certificate fingerprints and `Ready`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::{Context, Error, condition, find};
use crate::crd::{SAMLApp, SAMLAppStatus, SecretRef};
use crate::idp::AppKeys;
use crate::idp::{login_url, metadata_url};
use crate::keys::{KeyPem, SigningKey};
use crate::rotation::{self, Step};
use crate::saml::AppSettings;

/// The label that marks a Secret rolegate generated and may manage.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "rolegate");

pub use crate::idp::managed_secret_name;

/// Why an app has no usable key, as a condition reason and message.
pub type KeyProblem = (&'static str, String);

/// PURE: the status of `app` with its keys (or the problem with them).
pub fn plan_status(
    app: &SAMLApp,
    keys: Result<&AppKeys, &KeyProblem>,
    public_url: &str,
    now: Timestamp,
) -> SAMLAppStatus {
    let name = app.name_any();
    let previous = app.status.clone().unwrap_or_default().conditions;
    let generation = app.metadata.generation;
    let settings = AppSettings::from_app(app);
    let issuer = settings.as_ref().map(|s| s.issuer.clone()).ok();
    let ready = match (&settings, keys) {
        (Err(e), _) => condition(
            &previous,
            "Ready",
            false,
            match e {
                crate::saml::SamlError::ReservedAttribute { .. } => "InvalidMappings",
                _ => "InvalidSettings",
            },
            e.to_string(),
            generation,
            now,
        ),
        (Ok(_), Err((reason, message))) => condition(
            &previous,
            "Ready",
            false,
            reason,
            message.clone(),
            generation,
            now,
        ),
        (Ok(_), Ok(k)) if k.active.not_after() <= now => condition(
            &previous,
            "Ready",
            false,
            "CertificateExpired",
            format!(
                "the signing certificate expired at {}",
                k.active.not_after()
            ),
            generation,
            now,
        ),
        (Ok(_), Ok(k)) => condition(
            &previous,
            "Ready",
            true,
            "KeyReady",
            format!("signing with certificate {}", k.active.fingerprint()),
            generation,
            now,
        ),
    };
    SAMLAppStatus {
        issuer,
        metadata_url: Some(metadata_url(public_url, &name)),
        login_url: Some(login_url(public_url, &name)),
        certificates: keys.map(rotation::certificate_statuses).unwrap_or_default(),
        observed_generation: generation,
        conditions: vec![ready],
    }
}

fn parse(secret: &Secret, name: &str) -> Result<AppKeys, KeyProblem> {
    rotation::app_keys(secret, name)
        .map(|(keys, _)| keys)
        .map_err(|m| ("InvalidSecret", m))
}

fn is_managed(secret: &Secret) -> bool {
    secret
        .labels()
        .get(MANAGED_BY.0)
        .is_some_and(|v| v == MANAGED_BY.1)
}

/// An Event to publish about a change to the key: (reason, note).
type KeyEvent = Option<(&'static str, String)>;

fn generate(app: &SAMLApp, now: Timestamp) -> Result<(SigningKey, KeyPem), KeyProblem> {
    let issuer = AppSettings::from_app(app)
        .map_err(|e| ("InvalidSettings", e.to_string()))?
        .issuer;
    let signing = &app.spec.signing;
    SigningKey::generate(&issuer, signing.key_size, signing.validity_days, now)
        .map_err(|e| ("KeyGenerationFailed", e.to_string()))
}

/// Runs the rotation step due on a managed Secret, writing it back with its resourceVersion.
async fn rotate(
    app: &SAMLApp,
    ctx: &Context,
    secret: Secret,
    name: &str,
) -> Result<Result<(AppKeys, KeyEvent), KeyProblem>, Error> {
    let now = ctx.clock.now();
    let (keys, state) = match rotation::app_keys(&secret, name) {
        Ok(parsed) => parsed,
        Err(m) => return Ok(Err(("InvalidSecret", m))),
    };
    let lead = SignedDuration::from_hours(24 * i64::from(app.spec.signing.rotation_lead_days));
    let step = rotation::plan(&state, lead, now);
    if step == Step::Keep {
        return Ok(Ok((keys, None)));
    }
    let next = if step == Step::PublishNext {
        match generate(app, now) {
            Ok((_, pem)) => Some((pem.key_pem, pem.cert_pem)),
            Err(problem) => return Ok(Err(problem)),
        }
    } else {
        None
    };
    let updated = rotation::apply(&secret, step, next, lead, now);
    // `replace` carries the resourceVersion read: a concurrent writer makes it fail, and the
    // next reconcile starts again from what is there.
    let written = Api::<Secret>::namespaced(ctx.client.clone(), &ctx.namespace)
        .replace(name, &PostParams::default(), &updated)
        .await?;
    let keys = match rotation::app_keys(&written, name) {
        Ok((keys, _)) => keys,
        Err(m) => return Ok(Err(("InvalidSecret", m))),
    };
    let event = match step {
        Step::PublishNext => (
            "NextPublished",
            format!(
                "published the next signing certificate; it signs from {}",
                now + lead
            ),
        ),
        Step::Promote => (
            "Promoted",
            format!(
                "signing with certificate {}; the previous one is retiring",
                keys.active.fingerprint()
            ),
        ),
        Step::DropRetiring => (
            "RetiringDropped",
            "the retired certificate is no longer published".to_owned(),
        ),
        Step::Keep => return Ok(Ok((keys, None))),
    };
    Ok(Ok((keys, Some(event))))
}

/// The keys of `app`: from its `secretRef`, or the managed Secret, created when missing and
/// rotated when due.
async fn keys(
    app: &SAMLApp,
    ctx: &Context,
) -> Result<Result<(AppKeys, KeyEvent), KeyProblem>, Error> {
    if let Some(SecretRef { name, namespace }) = &app.spec.signing.secret_ref {
        let namespace = namespace.as_deref().unwrap_or(&ctx.namespace);
        let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
            .get_opt(name)
            .await?;
        return Ok(match secret {
            None => Err((
                "SecretNotFound",
                format!("Secret {namespace}/{name} does not exist"),
            )),
            Some(s) => parse(&s, name).map(|k| (k, None)),
        });
    }
    let name = managed_secret_name(&app.name_any());
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &ctx.namespace);
    if let Some(secret) = api.get_opt(&name).await? {
        if !is_managed(&secret) {
            return Ok(parse(&secret, &name)
                .map(|k| (k, None))
                .map_err(|(_, message)| {
                    (
                        "SecretConflict",
                        format!("{message}; it was not made by rolegate, so it is left alone"),
                    )
                }));
        }
        return rotate(app, ctx, secret, &name).await;
    }
    let (key, pem) = match generate(app, ctx.clock.now()) {
        Ok(generated) => generated,
        Err(problem) => return Ok(Err(problem)),
    };
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
                ("rolegate.dev/saml-app".to_owned(), app.name_any()),
            ])),
            owner_references: app.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(pem.cert_pem.into_bytes())),
            ("tls.key".to_owned(), ByteString(pem.key_pem.into_bytes())),
        ])),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            let note = format!("generated a signing key, certificate {}", key.fingerprint());
            Ok(Ok((AppKeys::single(key), Some(("KeyGenerated", note)))))
        }
        // Another writer got there first: use theirs on the next pass, never overwrite it.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            Err(Error::Pending(format!("Secret {name} appeared meanwhile")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Reconciles one SAMLApp.
///
/// # Errors
/// API failures; the controller retries them with backoff.
pub async fn reconcile(app: Arc<SAMLApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&app, &ctx).await;
    ctx.observe("SAMLApp", started, result.as_ref().map(|_| ()));
    result
}

async fn reconcile_inner(app: &SAMLApp, ctx: &Context) -> Result<Action, Error> {
    let keys = keys(app, ctx).await?;
    let status = plan_status(
        app,
        keys.as_ref().map(|(k, _)| k),
        &ctx.public_url,
        ctx.clock.now(),
    );
    let current = app.status.clone().unwrap_or_default();
    if status != current {
        Api::<SAMLApp>::all(ctx.client.clone())
            .patch_status(
                &app.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({"status": status})),
            )
            .await?;
    }
    if let Ok((_, Some((reason, note)))) = &keys {
        ctx.event(app, false, reason, note.clone()).await;
    }
    let was = find(&current.conditions, "Ready").map(|c| (c.status.clone(), c.reason.clone()));
    if let Some(ready) = find(&status.conditions, "Ready")
        && was.as_ref() != Some(&(ready.status.clone(), ready.reason.clone()))
        && ready.status != "True"
    {
        ctx.event(app, true, &ready.reason, ready.message.clone())
            .await;
    }
    ctx.succeeded(&format!("SAMLApp/{}", app.name_any()));
    // Rotation steps are due at day granularity; look hourly.
    Ok(Action::requeue(std::time::Duration::from_secs(3600)))
}

/// Retries a failed reconcile with exponential backoff.
pub fn error_policy(app: Arc<SAMLApp>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(app = %app.name_any(), %error, "reconcile failed");
    Action::requeue(ctx.backoff(&format!("SAMLApp/{}", app.name_any())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // Security finding 10: the SAMLApp's status names a claim mapped onto an AWS attribute.
    #[test]
    fn a_mapping_onto_an_aws_attribute_is_an_invalid_mappings_condition() {
        let mut app: SAMLApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp",
            "metadata": {"name": "aws", "generation": 4},
            "spec": {"mappings": {"groups": "https://aws.amazon.com/SAML/Attributes/Role"}}
        }))
        .unwrap();
        let problem: KeyProblem = ("NoKey", "no key yet".into());
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let status = plan_status(&app, Err(&problem), "https://idp.example", now);
        let ready = &status.conditions[0];
        assert_eq!(ready.type_, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "InvalidMappings");
        assert_eq!(
            ready.message,
            "SAMLApp \"aws\": mappings.groups targets \"https://aws.amazon.com/SAML/Attributes/Role\"; attributes under https://aws.amazon.com/SAML/Attributes/ are set by rolegate's policy only (RoleMappings and IAMProviders), never from claims"
        );
        app.spec.mappings.clear();
        let status = plan_status(&app, Err(&problem), "https://idp.example", now);
        assert_eq!(status.conditions[0].reason, "NoKey");
    }

    #[test]
    fn refused_auth0_settings_are_an_invalid_settings_condition_naming_the_field() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let problem: KeyProblem = ("NoKey", "no key yet".into());
        for (spec, field) in [
            (
                serde_json::json!({"signatureAlgorithm": "rsa-sha1"}),
                "signatureAlgorithm rsa-sha1",
            ),
            (
                serde_json::json!({"logout": {"sloEnabled": true}}),
                "logout.sloEnabled",
            ),
            (
                serde_json::json!({"allowedOrigins": ["null"]}),
                "allowedOrigins entry \"null\"",
            ),
        ] {
            let app: SAMLApp = serde_json::from_value(serde_json::json!({
                "apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp",
                "metadata": {"name": "aws"}, "spec": spec
            }))
            .unwrap();
            let status = plan_status(&app, Err(&problem), "https://idp.example", now);
            let ready = &status.conditions[0];
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("False", "InvalidSettings")
            );
            assert!(ready.message.contains(field), "{}", ready.message);
        }
    }
}
