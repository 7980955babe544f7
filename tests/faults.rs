//! STS failing under load: a throttling STS (a stub answering every call with AWS's
//! `Throttling` error) does not get a call per request, the caller gets a clear 503, and nothing is
//! cached, so the next request tries again.
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
    let h = Harness::start_with_sts(&resources(&unique("throttle"), false), sts).await;
    let token = h.sa_token("team-a", "app");
    let burst = futures::future::join_all((0..50).map(|_| h.credentials(&token, None))).await;
    for (status, body) in &burst {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("STS is throttling"),
            "{body}"
        );
    }
    // Concurrent callers share the in-flight STS call instead of piling up: one logical call
    // for the burst (a caller arriving after a failure starts a fresh one, since failures are
    // not cached), each with at most the SDK's three attempts.
    let logical = h.metric("rolegate_sts_calls_total");
    assert!(
        (1.0..=5.0).contains(&logical),
        "{logical} STS calls for one burst of 50"
    );
    let attempts = calls.load(Ordering::SeqCst);
    assert!(
        attempts >= 1 && attempts as f64 <= 3.0 * logical,
        "{attempts} attempts for {logical} calls"
    );
    h.state.issuer.cache.sync().await;
    assert!(h.state.issuer.cache.is_empty(), "a failure is not cached");
    // The next request tries again.
    let (status, _) = h.credentials(&token, None).await;
    assert_eq!(status, 503);
    assert_eq!(h.metric("rolegate_sts_calls_total"), logical + 1.0);
}
