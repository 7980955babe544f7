//! SAMLApp: its signing key, generated into a Secret in the operator namespace when no
//! `secretRef` is given (a user's Secret is never written), and its status: issuer, URLs,
//! certificate fingerprints and `Ready`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::{Context, Error, condition, find};
use crate::crd::{CertificateState, CertificateStatus, SAMLApp, SAMLAppStatus, SecretRef};
use crate::idp::{login_url, metadata_url};
use crate::keys::SigningKey;
use crate::saml::AppSettings;

/// The label that marks a Secret rolegate generated and may manage.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "rolegate");

pub use crate::idp::managed_secret_name;

/// Why an app has no usable key, as a condition reason and message.
pub type KeyProblem = (&'static str, String);

/// PURE: the status of `app` with its key (or the problem with it).
pub fn plan_status(
    app: &SAMLApp,
    key: Result<&SigningKey, &KeyProblem>,
    public_url: &str,
    now: Timestamp,
) -> SAMLAppStatus {
    let name = app.name_any();
    let previous = app.status.clone().unwrap_or_default().conditions;
    let generation = app.metadata.generation;
    let settings = AppSettings::from_app(app);
    let issuer = settings.as_ref().map(|s| s.issuer.clone()).ok();
    let ready = match (&settings, key) {
        (Err(e), _) => condition(
            &previous,
            "Ready",
            false,
            "InvalidSettings",
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
        (Ok(_), Ok(k)) if k.not_after() <= now => condition(
            &previous,
            "Ready",
            false,
            "CertificateExpired",
            format!("the signing certificate expired at {}", k.not_after()),
            generation,
            now,
        ),
        (Ok(_), Ok(k)) => condition(
            &previous,
            "Ready",
            true,
            "KeyReady",
            format!("signing with certificate {}", k.fingerprint()),
            generation,
            now,
        ),
    };
    SAMLAppStatus {
        issuer,
        metadata_url: Some(metadata_url(public_url, &name)),
        login_url: Some(login_url(public_url, &name)),
        certificates: key
            .ok()
            .map(|k| CertificateStatus {
                sha256_fingerprint: k.fingerprint().to_owned(),
                not_after: k.not_after().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                state: CertificateState::Active,
            })
            .into_iter()
            .collect(),
        observed_generation: generation,
        conditions: vec![ready],
    }
}

fn parse(secret: &Secret, name: &str) -> Result<SigningKey, KeyProblem> {
    crate::keys::from_secret(secret, name).map_err(|m| ("InvalidSecret", m))
}

fn is_managed(secret: &Secret) -> bool {
    secret
        .labels()
        .get(MANAGED_BY.0)
        .is_some_and(|v| v == MANAGED_BY.1)
}

/// The key of `app`: its `secretRef`, or the managed Secret, created when missing. Returns the
/// key and whether it was generated now.
async fn key(
    app: &SAMLApp,
    ctx: &Context,
) -> Result<Result<(SigningKey, bool), KeyProblem>, Error> {
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
            Some(s) => parse(&s, name).map(|k| (k, false)),
        });
    }
    let name = managed_secret_name(&app.name_any());
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &ctx.namespace);
    if let Some(secret) = api.get_opt(&name).await? {
        return Ok(parse(&secret, &name)
            .map(|k| (k, false))
            .map_err(|(reason, message)| {
                if is_managed(&secret) {
                    (reason, message)
                } else {
                    (
                        "SecretConflict",
                        format!("{message}; it was not made by rolegate, so it is left alone"),
                    )
                }
            }));
    }
    let issuer = match AppSettings::from_app(app) {
        Ok(s) => s.issuer,
        Err(e) => return Ok(Err(("InvalidSettings", e.to_string()))),
    };
    let signing = &app.spec.signing;
    let (key, pem) = match SigningKey::generate(
        &issuer,
        signing.key_size,
        signing.validity_days,
        Timestamp::now(),
    ) {
        Ok(generated) => generated,
        Err(e) => return Ok(Err(("KeyGenerationFailed", e.to_string()))),
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
        Ok(_) => Ok(Ok((key, true))),
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
    let key = key(app, ctx).await?;
    let now = Timestamp::now();
    let status = plan_status(app, key.as_ref().map(|(k, _)| k), &ctx.public_url, now);
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
    if let Ok((k, true)) = &key {
        ctx.event(
            app,
            false,
            "KeyGenerated",
            format!("generated a signing key, certificate {}", k.fingerprint()),
        )
        .await;
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
    // Look again before the certificate expires, and at least hourly.
    Ok(Action::requeue(std::time::Duration::from_secs(3600)))
}

/// Retries a failed reconcile with exponential backoff.
pub fn error_policy(app: Arc<SAMLApp>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(app = %app.name_any(), %error, "reconcile failed");
    Action::requeue(ctx.backoff(&format!("SAMLApp/{}", app.name_any())))
}
