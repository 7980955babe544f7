//! The operator's certificates: gather → plan (pure) → apply.
//!
//! - `self-signed` mode (the default): a CA kept in an Opaque Secret in the controller-only
//!   Secrets namespace (the public-facing server has no access there), a `kubernetes.io/tls`
//!   serving Secret for the server's Service signed by it, the CA
//!   bundle published in a ConfigMap (what node agents mount: public, no key), and the bundle
//!   written into the MutatingWebhookConfiguration's `caBundle`.
//! - `external` mode (cert-manager issues the serving Secret and its cainjector fills
//!   `caBundle`): only the ConfigMap is published, from the serving Secret's `ca.crt`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use super::Error;
use crate::pki::{self, CertifiedKey, Renewal};
use crate::store::secret_value;

/// Who issues the serving certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CertMode {
    /// rolegate's own CA.
    SelfSigned,
    /// Someone else (cert-manager) writes the serving Secret, with `ca.crt`.
    External,
}

/// Names of the objects the certificates live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertOptions {
    /// Who issues.
    pub mode: CertMode,
    /// The operator namespace: the serving Secret and the bundle ConfigMap.
    pub namespace: String,
    /// The controller-only namespace the CA Secret lives in.
    pub ca_namespace: String,
    /// Opaque Secret holding the CA (`tls.crt`, `tls.key`, `previous.crt`).
    pub ca_secret: String,
    /// ConfigMap with the public CA bundle under `ca.crt`.
    pub ca_configmap: String,
    /// `kubernetes.io/tls` Secret the server serves with.
    pub serving_secret: String,
    /// The server's Service; the serving certificate names it.
    pub service: String,
    /// MutatingWebhookConfiguration whose `caBundle` is kept (self-signed mode).
    pub webhook: Option<String>,
}

const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "rolegate");

/// What was found.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The CA Secret: certificate, key, previous certificate.
    pub ca: Option<(String, String, Option<String>)>,
    /// The CA was found where earlier versions kept it, in the operator namespace (which the
    /// server reads): it is moved to the CA namespace and deleted there.
    pub ca_in_operator_namespace: bool,
    /// The serving Secret's certificate and `ca.crt`.
    pub serving: Option<(String, Option<String>)>,
    /// The ConfigMap's `ca.crt`.
    pub bundle: Option<String>,
    /// The webhook configuration, when self-signed mode keeps one.
    pub webhook: Option<MutatingWebhookConfiguration>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Make a new CA, and why.
    pub new_ca: Option<String>,
    /// Issue a new serving certificate, and why.
    pub new_serving: Option<String>,
}

/// PURE: what the certificates need at `now` (self-signed mode).
pub fn plan(observed: &Observed, dns_names: &[String], now: Timestamp) -> Plan {
    let ca_cert = observed.ca.as_ref().map(|(cert, _, _)| cert.as_str());
    let new_ca = match pki::renewal(ca_cert, now) {
        Renewal::Keep => None,
        Renewal::Issue(why) => Some(format!("the CA must be (re)made: {why}")),
    };
    let new_serving = match (&new_ca, ca_cert) {
        (Some(_), _) | (None, None) => {
            Some("the serving certificate follows the new CA".to_owned())
        }
        (None, Some(ca)) => {
            let serving = observed.serving.as_ref().map(|(cert, _)| cert.as_str());
            match pki::serving_renewal(serving, ca, dns_names, now) {
                Renewal::Keep => None,
                Renewal::Issue(why) => Some(format!("the serving certificate is reissued: {why}")),
            }
        }
    };
    Plan {
        new_ca,
        new_serving,
    }
}

/// Gathers what exists.
async fn gather(client: &Client, options: &CertOptions) -> Result<Observed, Error> {
    let secrets = Api::<Secret>::namespaced(client.clone(), &options.namespace);
    let text = |s: &Secret, key: &str| {
        secret_value(s, key).map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let ca_of = |s: Secret| {
        Some((
            text(&s, "tls.crt")?,
            text(&s, "tls.key")?,
            text(&s, "previous.crt"),
        ))
    };
    let (ca, ca_in_operator_namespace) = match options.mode {
        CertMode::SelfSigned => {
            let ca = Api::<Secret>::namespaced(client.clone(), &options.ca_namespace)
                .get_opt(&options.ca_secret)
                .await?
                .and_then(ca_of);
            match ca {
                Some(ca) => (Some(ca), false),
                None if options.ca_namespace != options.namespace => {
                    // Only a CA rolegate made there is moved; anything else is not ours.
                    let legacy = secrets
                        .get_opt(&options.ca_secret)
                        .await?
                        .filter(managed)
                        .and_then(ca_of);
                    let found = legacy.is_some();
                    (legacy, found)
                }
                None => (None, false),
            }
        }
        CertMode::External => (None, false),
    };
    let serving = secrets
        .get_opt(&options.serving_secret)
        .await?
        .and_then(|s| Some((text(&s, "tls.crt")?, text(&s, "ca.crt"))));
    let bundle = Api::<ConfigMap>::namespaced(client.clone(), &options.namespace)
        .get_opt(&options.ca_configmap)
        .await?
        .and_then(|c| c.data.and_then(|d| d.get("ca.crt").cloned()));
    let webhook = match (&options.webhook, options.mode) {
        (Some(name), CertMode::SelfSigned) => {
            Api::<MutatingWebhookConfiguration>::all(client.clone())
                .get_opt(name)
                .await?
        }
        _ => None,
    };
    Ok(Observed {
        ca,
        ca_in_operator_namespace,
        serving,
        bundle,
        webhook,
    })
}

fn managed(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY.0))
        .is_some_and(|v| v == MANAGED_BY.1)
}

fn ca_secret(options: &CertOptions, ca: &CertifiedKey, previous: Option<&str>) -> Secret {
    let mut data = vec![
        ("tls.crt", ca.cert_pem.as_str()),
        ("tls.key", ca.key_pem.as_str()),
    ];
    if let Some(p) = previous {
        data.push(("previous.crt", p));
    }
    Secret {
        metadata: meta(&options.ca_secret, &options.ca_namespace),
        type_: Some("Opaque".into()),
        data: Some(bytes(&data)),
        ..Secret::default()
    }
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(BTreeMap::from([(
            MANAGED_BY.0.to_owned(),
            MANAGED_BY.1.to_owned(),
        )])),
        ..ObjectMeta::default()
    }
}

fn bytes(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

/// Creates `object`, or replaces the existing one (carrying its resourceVersion, so that a
/// concurrent writer makes this fail and retry rather than be overwritten blindly).
async fn upsert<K>(api: &Api<K>, name: &str, mut object: K) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match api.get_opt(name).await? {
        Some(existing) => {
            object.meta_mut().resource_version = existing.meta().resource_version.clone();
            api.replace(name, &PostParams::default(), &object).await?;
        }
        None => {
            api.create(&PostParams::default(), &object).await?;
        }
    }
    Ok(())
}

/// What a pass changed, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Why each change was made.
    pub changes: Vec<String>,
    /// When each certificate in use expires: `ca` (self-signed mode) and `serving`.
    pub expiries: Vec<(&'static str, Timestamp)>,
}

impl Outcome {
    fn expires(&mut self, which: &'static str, pem: &str) {
        if let Ok(info) = pki::inspect(pem) {
            self.expiries.push((which, info.not_after));
        }
    }
}

/// One pass: gather, plan, apply. `now` comes from the caller's clock.
///
/// # Errors
/// API failures, or a CA that cannot sign.
pub async fn reconcile(
    client: &Client,
    options: &CertOptions,
    now: Timestamp,
) -> Result<Outcome, Error> {
    let observed = gather(client, options).await?;
    let mut outcome = Outcome::default();
    let namespace = options.namespace.as_str();
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let bundle = match options.mode {
        CertMode::External => match observed.serving.as_ref().and_then(|(_, ca)| ca.clone()) {
            Some(ca) => {
                if let Some((cert, _)) = &observed.serving {
                    outcome.expires("serving", cert);
                }
                ca
            }
            None => {
                return Err(Error::Pending(format!(
                    "Secret {namespace}/{} has no ca.crt yet (is cert-manager issuing it?)",
                    options.serving_secret
                )));
            }
        },
        CertMode::SelfSigned => {
            let names = pki::service_dns_names(&options.service, namespace);
            let plan = plan(&observed, &names, now);
            let ca_secrets = Api::<Secret>::namespaced(client.clone(), &options.ca_namespace);
            let (ca, previous) = match (&plan.new_ca, &observed.ca) {
                (None, Some((cert, key, previous))) => {
                    let ca = CertifiedKey {
                        cert_pem: cert.clone(),
                        key_pem: key.clone(),
                    };
                    if observed.ca_in_operator_namespace {
                        upsert(
                            &ca_secrets,
                            &options.ca_secret,
                            ca_secret(options, &ca, previous.as_deref()),
                        )
                        .await?;
                        secrets
                            .delete(&options.ca_secret, &DeleteParams::default())
                            .await?;
                        outcome.changes.push(format!(
                            "the CA moved from namespace {namespace} (which the server reads) to {}",
                            options.ca_namespace
                        ));
                    }
                    (ca, previous.clone())
                }
                (why, old) => {
                    let ca = pki::new_ca(now, "rolegate CA")
                        .map_err(|e| Error::Pending(e.to_string()))?;
                    let previous = old.as_ref().map(|(cert, _, _)| cert.clone());
                    upsert(
                        &ca_secrets,
                        &options.ca_secret,
                        ca_secret(options, &ca, previous.as_deref()),
                    )
                    .await?;
                    if observed.ca_in_operator_namespace {
                        secrets
                            .delete(&options.ca_secret, &DeleteParams::default())
                            .await?;
                    }
                    outcome
                        .changes
                        .push(why.clone().unwrap_or_else(|| "the CA was made".into()));
                    (ca, previous)
                }
            };
            let bundle = pki::bundle(&ca.cert_pem, previous.as_deref(), now);
            outcome.expires("ca", &ca.cert_pem);
            let serving_ca = observed.serving.as_ref().and_then(|(_, c)| c.as_deref());
            if let Some(why) = &plan.new_serving {
                let serving = pki::issue_serving(&ca, &names, now)
                    .map_err(|e| Error::Pending(e.to_string()))?;
                let secret = Secret {
                    metadata: meta(&options.serving_secret, namespace),
                    type_: Some("kubernetes.io/tls".into()),
                    data: Some(bytes(&[
                        ("tls.crt", serving.cert_pem.as_str()),
                        ("tls.key", serving.key_pem.as_str()),
                        ("ca.crt", bundle.as_str()),
                    ])),
                    ..Secret::default()
                };
                upsert(&secrets, &options.serving_secret, secret).await?;
                outcome.expires("serving", &serving.cert_pem);
                outcome.changes.push(why.clone());
            } else if let Some((cert, _)) = &observed.serving {
                outcome.expires("serving", cert);
            }
            if plan.new_serving.is_none() && serving_ca != Some(bundle.as_str()) {
                // Same certificate, but the bundle beside it changed (an old CA expired).
                let patch =
                    serde_json::json!({"data": {"ca.crt": ByteString(bundle.as_bytes().to_vec())}});
                secrets
                    .patch(
                        &options.serving_secret,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                outcome
                    .changes
                    .push("the serving Secret's ca.crt follows the bundle".into());
            }
            if let Some(mut config) = observed.webhook.clone() {
                let mut stale = 0;
                for hook in config.webhooks.iter_mut().flatten() {
                    if hook
                        .client_config
                        .ca_bundle
                        .as_ref()
                        .map(|b| b.0.as_slice())
                        != Some(bundle.as_bytes())
                    {
                        hook.client_config.ca_bundle = Some(ByteString(bundle.as_bytes().to_vec()));
                        stale += 1;
                    }
                }
                if stale > 0 {
                    let name = config.metadata.name.clone().unwrap_or_default();
                    // Carries the resourceVersion read above: a concurrent edit makes this fail
                    // and the next pass retry, rather than be overwritten.
                    Api::<MutatingWebhookConfiguration>::all(client.clone())
                        .replace(&name, &PostParams::default(), &config)
                        .await?;
                    outcome.changes.push(format!(
                        "MutatingWebhookConfiguration {name}: {stale} webhook(s) now trust the CA bundle"
                    ));
                }
            }
            bundle
        }
    };
    if observed.bundle.as_deref() != Some(bundle.as_str()) {
        let configmap = ConfigMap {
            metadata: meta(&options.ca_configmap, namespace),
            data: Some(BTreeMap::from([("ca.crt".to_owned(), bundle)])),
            ..ConfigMap::default()
        };
        upsert(
            &Api::<ConfigMap>::namespaced(client.clone(), namespace),
            &options.ca_configmap,
            configmap,
        )
        .await?;
        outcome.changes.push(format!(
            "ConfigMap {} publishes the CA bundle",
            options.ca_configmap
        ));
    }
    Ok(outcome)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_790_000_000).unwrap()
    }

    #[test]
    fn nothing_yet_means_a_ca_and_a_serving_certificate() {
        let plan = plan(&Observed::default(), &["svc".into()], now());
        assert!(plan.new_ca.is_some());
        assert!(plan.new_serving.is_some());
    }

    #[test]
    fn a_good_pair_is_kept_and_a_new_ca_reissues_the_serving_certificate() {
        let names = pki::service_dns_names("rolegate-server", "ns");
        let ca = pki::new_ca(now(), "rolegate CA").unwrap();
        let serving = pki::issue_serving(&ca, &names, now()).unwrap();
        let observed = Observed {
            ca: Some((ca.cert_pem.clone(), ca.key_pem.clone(), None)),
            serving: Some((serving.cert_pem.clone(), Some(ca.cert_pem.clone()))),
            ..Observed::default()
        };
        assert_eq!(plan(&observed, &names, now()), Plan::default());
        let expired_ca = Observed {
            ca: Some((ca.cert_pem.clone(), ca.key_pem.clone(), None)),
            ..observed.clone()
        };
        let much_later = now() + pki::CA_LIFETIME;
        let p = plan(&expired_ca, &names, much_later);
        assert!(p.new_ca.is_some() && p.new_serving.is_some());
        let day = jiff::SignedDuration::from_hours(24);
        let p = plan(&observed, &names, now() + day * 70);
        assert_eq!(p.new_ca, None);
        assert!(p.new_serving.unwrap().contains("third"));
    }
}
