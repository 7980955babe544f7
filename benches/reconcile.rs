//! 1 000 RoleMappings reconciled to Accepted against kube's tower-test mock API server, which
//! answers every read and patch as the API server would.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt as _;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use kube::client::Body;
use prometheus_client::registry::Registry;
use rolegate::controller::{Context, SdkConnector, rolemapping};
use rolegate::crd::RoleMapping;
use serde_json::json;

const MAPPINGS: usize = 1_000;

/// Answers requests like an API server holding one IAMProvider, its SAMLApp and namespaces.
async fn api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    accepted: Arc<AtomicUsize>,
) {
    let provider = json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "IAMProvider", "metadata": {"name": "acct"},
        "spec": {"samlApp": "aws", "accountId": "123456789012", "providerName": "rolegate",
                 "allowedNamespaces": {}, "allowedRoles": ["arn:aws:iam::123456789012:role/*"]}});
    let app = json!({"apiVersion": "rolegate.dev/v1alpha1", "kind": "SAMLApp", "metadata": {"name": "aws"}, "spec": {}});
    while let Some((request, send)) = handle.next_request().await {
        let path = request.uri().path().to_owned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let reply = if path.ends_with("/iamproviders/acct") {
            serde_json::to_vec(&provider).unwrap()
        } else if path.ends_with("/samlapps/aws") {
            serde_json::to_vec(&app).unwrap()
        } else if path.starts_with("/api/v1/namespaces/") {
            let name = path.rsplit('/').next().unwrap();
            serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            )
            .unwrap()
        } else if path.ends_with("/status") {
            let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if patch["status"]["conditions"][0]["status"] == "True" {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            // The patched object; the reconciler only needs a valid RoleMapping back.
            let name = path.split('/').nth_back(1).unwrap();
            let ns = path.split('/').nth(5).unwrap();
            serde_json::to_vec(&mapping(ns, name)).unwrap()
        } else {
            body.to_vec()
        };
        send.send_response(
            Response::builder()
                .status(200)
                .body(Body::from(reply))
                .unwrap(),
        );
    }
}

fn mapping(namespace: &str, name: &str) -> RoleMapping {
    serde_json::from_value(json!({
        "apiVersion": "rolegate.dev/v1alpha1", "kind": "RoleMapping",
        // Already holding the revocation finalizer, as every RoleMapping does after its first
        // reconcile: the bench measures the steady path to Accepted.
        "metadata": {"name": name, "namespace": namespace, "generation": 1,
                     "finalizers": [rolemapping::FINALIZER]},
        "spec": {"provider": "acct", "roleArn": format!("arn:aws:iam::123456789012:role/{name}"),
                 "subjects": [{"kind": "ServiceAccount", "name": "app"}]},
    }))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mappings: Vec<Arc<RoleMapping>> = (0..MAPPINGS)
        .map(|i| Arc::new(mapping(&format!("team-{}", i % 50), &format!("app-{i}"))))
        .collect();
    let mut group = c.benchmark_group("controller");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("rolemappings_1000_to_accepted", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
                let patched_accepted = Arc::new(AtomicUsize::new(0));
                let server = tokio::spawn(api_server(handle, Arc::clone(&patched_accepted)));
                let client = kube::Client::new(service, "default");
                let mut registry = Registry::default();
                let ctx = Arc::new(Context::new(
                    client,
                    Arc::new(SdkConnector),
                    "rolegate".into(),
                    "https://rolegate.example".into(),
                    &mut registry,
                ));
                // The controller's default concurrency is unbounded; 16 in flight is a fair middle.
                let reconciled = futures::stream::iter(mappings.iter().cloned())
                    .map(|m| rolemapping::reconcile(m, Arc::clone(&ctx)))
                    .buffer_unordered(16)
                    .filter(|r| futures::future::ready(r.is_ok()))
                    .count()
                    .await;
                assert_eq!(reconciled, MAPPINGS);
                assert_eq!(
                    patched_accepted.load(Ordering::Relaxed),
                    MAPPINGS,
                    "every status patch says Accepted"
                );
                drop(ctx);
                server.abort();
            });
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
