//! The server as `rolegate server` runs it in a cluster: service-account tokens checked by
//! TokenReview against kube's tower-test mock API server, outcomes cached, and no API request per
//! credentials request once warm. STS is moto.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::apiserver::{self, Expect};
use common::{Harness, resources, unique};
use rolegate::tokenreview::KubeTokenReviewer;
use rolegate::tokens::TokenVerifier;
use serde_json::json;

const REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

fn review(authenticated: bool, username: &str) -> serde_json::Value {
    let mut status = json!({"authenticated": authenticated});
    if authenticated {
        status["user"] = json!({"username": username, "extra": {"authentication.kubernetes.io/pod-name": ["app-5c9d"]}});
        status["audiences"] = json!(["rolegate"]);
    } else {
        status["error"] = json!("token has been invalidated");
    }
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}, "status": status})
}

async fn cluster_harness(client: kube::Client) -> Harness {
    let reviewer = Arc::new(KubeTokenReviewer::new(client, Duration::from_secs(30)));
    Harness::start_with(&resources(&unique("cluster"), false), move |config| {
        TokenVerifier::new(config).with_token_review(reviewer)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_review_vouches_and_is_cached() {
    let (client, handle) = apiserver::client();
    let h = cluster_harness(client).await;
    let token = h.sa_token("team-a", "app");
    let verifier = apiserver::scenario(
        handle,
        vec![Expect {
            method: http::Method::POST,
            path: REVIEWS.into(),
            status: 201,
            reply: review(true, "system:serviceaccount:team-a:app"),
            within: Duration::from_secs(1),
        }],
    );
    let (status, body) = h.credentials(&token, None).await;
    assert_eq!(status, 200, "{body}");
    let (seen, mut handle) = verifier.await.unwrap();
    assert_eq!(seen[0].body["spec"]["token"], token.as_str());
    assert_eq!(seen[0].body["spec"]["audiences"], json!(["rolegate"]));

    // Warm: the same token again costs no API request at all.
    let (status, _) = h.credentials(&token, None).await;
    assert_eq!(status, 200);
    apiserver::no_more(&mut handle).await;
    assert_eq!(h.metric("rolegate_sts_calls_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_api_server_rejects_is_refused() {
    let (client, handle) = apiserver::client();
    let h = cluster_harness(client).await;
    let verifier = apiserver::scenario(
        handle,
        vec![Expect {
            method: http::Method::POST,
            path: REVIEWS.into(),
            status: 201,
            reply: review(false, ""),
            within: Duration::from_secs(1),
        }],
    );
    let (status, body) = h.credentials(&h.sa_token("team-a", "app"), None).await;
    verifier.await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["error_description"],
        "token was not authenticated by the Kubernetes API: token has been invalidated"
    );
    assert_eq!(h.metric("rolegate_assertions_signed_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_namespace_never_borrows_a_provider_that_does_not_allow_it() {
    let (client, handle) = apiserver::client();
    let h = cluster_harness(client).await;
    let verifier = apiserver::scenario(
        handle,
        vec![Expect {
            method: http::Method::POST,
            path: REVIEWS.into(),
            status: 201,
            reply: review(true, "system:serviceaccount:team-b:app"),
            within: Duration::from_secs(1),
        }],
    );
    let (status, body) = h
        .credentials(&h.sa_token("team-b", "app"), Some(common::ROLE))
        .await;
    verifier.await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("(NamespaceNotAllowed)"),
        "{body}"
    );
    assert_eq!(h.metric("rolegate_sts_calls_total"), 0.0);
}
