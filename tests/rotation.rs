//! Signing-key rotation on a pinned clock: the SAMLApp controller publishes a Next certificate
//! ahead of use, promotes it after the lead time and drops the retired one later. Assertions are
//! signed by the old key until the new one is Active, and the metadata in IAM (moto) carries both
//! certificates during the overlap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine as _;
use common::apiserver::{self, Expect};
use common::{ACCOUNT, moto, unique};
use jiff::{SignedDuration, Timestamp};
use prometheus_client::registry::Registry;
use rolegate::aws::SamlProviders as _;
use rolegate::aws::sdk::{IamAccess, SdkSamlProviders};
use rolegate::controller::{Context, SdkConnector, iamprovider, samlapp};
use rolegate::server::Clock;
use serde_json::json;

#[derive(Debug)]
struct Pinned(AtomicI64);

impl Clock for Pinned {
    fn now(&self) -> Timestamp {
        Timestamp::from_second(self.0.load(Ordering::SeqCst)).unwrap()
    }
}

const SECRET: &str = "/api/v1/namespaces/rolegate/secrets/aws-signing";
const DAY: i64 = 24 * 3600;

fn app() -> serde_json::Value {
    json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp", "metadata": {"name": "aws", "uid": "u9", "generation": 1},
           "spec": {"signing": {"validityDays": 10, "rotationLeadDays": 3}}})
}

/// One SAMLApp reconcile at the clock's time over `secret` (None: not created yet); returns the
/// Secret written, the status patched and the Event reason.
async fn reconcile_at(
    clock: &Arc<Pinned>,
    secret: Option<&serde_json::Value>,
) -> (serde_json::Value, serde_json::Value, String) {
    let (client, handle) = apiserver::client();
    let mut registry = Registry::default();
    let ctx = Context::new(
        client,
        Arc::new(SdkConnector),
        "rolegate".into(),
        "https://rolegate.example".into(),
        &mut registry,
    )
    .with_clock(Arc::clone(clock) as Arc<dyn Clock>);
    let write = match secret {
        None => vec![
            Expect::not_found(SECRET),
            Expect::create("/api/v1/namespaces/rolegate/secrets").after_peer(),
        ],
        Some(s) => vec![
            Expect::get(SECRET, s.clone()),
            Expect {
                method: http::Method::PUT,
                ..Expect::patch(SECRET, serde_json::Value::Null)
            }
            .after_peer(),
        ],
    };
    let mut calls = write;
    calls.push(Expect::patch(
        "/apis/rolegate.dev/v1alpha1/samlapps/aws/status",
        app(),
    ));
    calls.push(Expect::event("default"));
    let verifier = apiserver::scenario(handle, calls);
    samlapp::reconcile(
        Arc::new(serde_json::from_value(app()).unwrap()),
        Arc::new(ctx),
    )
    .await
    .unwrap();
    let (seen, mut handle) = verifier.await.unwrap();
    apiserver::no_more(&mut handle).await;
    let mut written = seen[1].body.clone();
    written["metadata"]["resourceVersion"] = json!("1");
    (
        written,
        seen[2].body["status"].clone(),
        seen[3].body["reason"].as_str().unwrap().to_owned(),
    )
}

fn keys(secret: &serde_json::Value) -> rolegate::idp::AppKeys {
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(secret.clone()).unwrap();
    rolegate::rotation::app_keys(&secret, "aws-signing")
        .unwrap()
        .0
}

fn b64_cert(secret: &serde_json::Value, field: &str) -> String {
    let pem_text = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][field].as_str().unwrap())
        .unwrap();
    let block = pem::parse(pem_text).unwrap();
    base64::engine::general_purpose::STANDARD.encode(block.contents())
}

/// Signs an assertion with the keys' Active key and returns the certificate in its KeyInfo.
fn signing_cert(keys: &rolegate::idp::AppKeys) -> String {
    let settings =
        rolegate::saml::AppSettings::from_app(&serde_json::from_value(app()).unwrap()).unwrap();
    let attributes = vec![
        rolegate::saml::Attribute::single("a", "b"),
        rolegate::saml::Attribute::single("c", "d"),
    ];
    let content = rolegate::saml::AssertionContent {
        name_id: "x",
        attributes: &attributes,
        authn_context: rolegate::saml::AUTHN_UNSPECIFIED,
    };
    let ids = rolegate::saml::DocumentIds {
        response: "_r".into(),
        assertion: "_a".into(),
    };
    let signed = rolegate::saml::build_response(
        &settings,
        &content,
        &ids,
        Timestamp::now(),
        keys.active.as_ref(),
    )
    .unwrap();
    let start = signed.xml.find("<ds:X509Certificate>").unwrap() + "<ds:X509Certificate>".len();
    signed.xml[start..start + signed.xml[start..].find('<').unwrap()].to_owned()
}

/// Registers the metadata built from `secret` in moto and returns what IAM holds.
async fn register(provider_name: &str, secret: &serde_json::Value) -> String {
    let (client, handle) = apiserver::client();
    let mut registry = Registry::default();
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(SdkConnector),
        "rolegate".into(),
        "https://rolegate.example".into(),
        &mut registry,
    ));
    let provider = json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "IAMProvider",
        "metadata": {"name": "acct", "finalizers": [iamprovider::FINALIZER]},
        "spec": {"samlApp": "aws", "accountId": ACCOUNT, "providerName": provider_name, "endpointURL": moto()}});
    let verifier = apiserver::scenario(
        handle,
        vec![
            Expect::get("/apis/rolegate.dev/v1alpha1/samlapps/aws", app()),
            Expect::get(SECRET, secret.clone()),
            Expect::patch(
                "/apis/rolegate.dev/v1alpha1/iamproviders/acct/status",
                provider.clone(),
            )
            .after_peer(),
            Expect::event("default"),
        ],
    );
    iamprovider::reconcile(Arc::new(serde_json::from_value(provider).unwrap()), ctx)
        .await
        .unwrap();
    verifier.await.unwrap();
    let iam = SdkSamlProviders::new(&IamAccess {
        endpoint_url: Some(moto()),
        ..IamAccess::default()
    })
    .await;
    iam.get(&format!(
        "arn:aws:iam::{ACCOUNT}:saml-provider/{provider_name}"
    ))
    .await
    .unwrap()
    .unwrap()
    .metadata
}

#[tokio::test]
async fn rotation_publishes_ahead_switches_after_the_lead_and_retires() {
    let t0 = Timestamp::now().as_second();
    let clock = Arc::new(Pinned(AtomicI64::new(t0)));
    let provider_name = unique("rotation");

    // t0: the key is generated (valid 10 days).
    let (secret_a, status, reason) = reconcile_at(&clock, None).await;
    assert_eq!(reason, "KeyGenerated");
    assert_eq!(status["certificates"].as_array().unwrap().len(), 1);
    let cert_a = b64_cert(&secret_a, "tls.crt");

    // t0 + 4 days: two lead times (6 days) before notAfter, the Next key is published.
    clock.0.store(t0 + 4 * DAY, Ordering::SeqCst);
    let (secret_b, status, reason) = reconcile_at(&clock, Some(&secret_a)).await;
    assert_eq!(reason, "NextPublished");
    let states: Vec<&str> = status["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["Active", "Next"]);
    let cert_b = b64_cert(&secret_b, "next.crt");
    assert_ne!(cert_a, cert_b);
    let activates = (Timestamp::from_second(t0 + 4 * DAY).unwrap()
        + SignedDuration::from_hours(72))
    .strftime("%Y-%m-%dT%H:%M:%SZ")
    .to_string();
    assert_eq!(
        secret_b["metadata"]["annotations"]["rolegate.dev/next-activates-at"],
        activates
    );
    // During the overlap the old key still signs, and IAM holds both certificates.
    assert_eq!(
        signing_cert(&keys(&secret_b)),
        cert_a,
        "Next does not sign before it is Active"
    );
    let held = register(&provider_name, &secret_b).await;
    assert!(
        held.contains(&cert_a) && held.contains(&cert_b),
        "IAM metadata carries both certificates"
    );

    // At the end of the lead time Next becomes Active and the old certificate Retiring.
    clock.0.store(t0 + 7 * DAY, Ordering::SeqCst);
    let (secret_c, status, reason) = reconcile_at(&clock, Some(&secret_b)).await;
    assert_eq!(reason, "Promoted");
    let states: Vec<&str> = status["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["Active", "Retiring"]);
    assert_eq!(
        signing_cert(&keys(&secret_c)),
        cert_b,
        "the new key signs once Active"
    );
    assert_eq!(b64_cert(&secret_c, "retiring.crt"), cert_a);
    let held = register(&provider_name, &secret_c).await;
    assert!(
        held.contains(&cert_a) && held.contains(&cert_b),
        "the retiring certificate stays published"
    );

    // A lead time later the retired certificate is dropped.
    clock.0.store(t0 + 10 * DAY, Ordering::SeqCst);
    let (secret_d, status, reason) = reconcile_at(&clock, Some(&secret_c)).await;
    assert_eq!(reason, "RetiringDropped");
    assert_eq!(status["certificates"].as_array().unwrap().len(), 1);
    let held = register(&provider_name, &secret_d).await;
    assert!(!held.contains(&cert_a) && held.contains(&cert_b));
}
