//! STS failing under load: a throttling STS (a stub answering every call with AWS's
//! `Throttling` error) does not get a call per request, the caller gets a clear 503 with
//! `Retry-After` once the paced wait is over, and nothing is cached, so a request after that
//! time tries again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::post;
use common::{Harness, resources, unique};

const THROTTLED: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"#;

/// An STS endpoint that throttles every call; returns its URL and call counter.
async fn throttling_sts() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/",
        post(move || {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    [("content-type", "text/xml")],
                    THROTTLED,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_sts_is_not_piled_up_on_and_nothing_is_cached() {
    let (sts, calls) = throttling_sts().await;
    let pacing = rolegate::pacing::PacerSettings {
        max_wait: std::time::Duration::from_secs(1),
        ..rolegate::pacing::PacerSettings::default()
    };
    let h =
        Harness::start_with_sts_pacing(&resources(&unique("throttle"), false), sts, pacing).await;
    let token = h.sa_token("team-a", "app");
    let ask = || async {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/credentials", h.url))
            .header("Authorization", &token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after: Option<u64> = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse().unwrap());
        let body: serde_json::Value = response.json().await.unwrap();
        (status, retry_after, body)
    };
    let burst = futures::future::join_all((0..50).map(|_| ask())).await;
    let mut longest = 0;
    for (status, retry_after, body) in &burst {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("STS is throttling"),
            "{body}"
        );
        longest = longest.max(retry_after.expect("Retry-After on every 503"));
    }
    // Concurrent callers share the in-flight STS call instead of piling up, and that call is
    // paced: after the first Throttling the next attempt waits for a slower slot, so within
    // the one-second wait the burst of 50 costs a few attempts, each counted.
    let attempts = calls.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&attempts),
        "{attempts} STS attempts for one burst of 50"
    );
    assert_eq!(h.metric("rolegate_sts_calls_total"), attempts as f64);
    assert_eq!(h.metric("rolegate_sts_throttles_total"), attempts as f64);
    assert!(h.metric("rolegate_sts_queue_refusals_total") >= 1.0);
    h.state.issuer.cache.sync().await;
    assert!(h.state.issuer.cache.is_empty(), "a failure is not cached");
    // After Retry-After, the next request tries STS again (and is refused again).
    tokio::time::sleep(std::time::Duration::from_secs(longest)).await;
    let (status, retry_after, _) = ask().await;
    assert_eq!(status, 503);
    assert!(retry_after.is_some());
    assert!(calls.load(Ordering::SeqCst) > attempts, "tried STS again");
}
