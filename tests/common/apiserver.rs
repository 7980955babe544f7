//! Scenario tests against kube's tower-test mock API server: each expected request, in order,
//! with its answer; a missing call fails after one second.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt as _;
use kube::client::Body;
use tower_test::mock;

/// The test's end of the mock API server.
pub type Handle = mock::Handle<Request<Body>, Response<Body>>;

/// A client talking to the mock API server.
pub fn client() -> (kube::Client, Handle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// One expected request and the answer to it.
pub struct Expect {
    pub method: Method,
    pub path: String,
    pub status: u16,
    pub reply: serde_json::Value,
    pub within: Duration,
}

impl Expect {
    fn new(method: Method, path: &str, status: u16, reply: serde_json::Value) -> Self {
        Self {
            method,
            path: path.into(),
            status,
            reply,
            within: Duration::from_secs(1),
        }
    }

    /// This call follows slow work (a call to a real peer such as IAM, or RSA key generation),
    /// so it may come later than one second.
    #[must_use]
    pub fn after_peer(mut self) -> Self {
        self.within = Duration::from_secs(20);
        self
    }

    /// A GET answered with `reply`.
    pub fn get(path: &str, reply: serde_json::Value) -> Self {
        Self::new(Method::GET, path, 200, reply)
    }

    /// A GET answered 404.
    pub fn not_found(path: &str) -> Self {
        let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "NotFound", "code": 404, "message": "not found"});
        Self::new(Method::GET, path, 404, status)
    }

    /// A PATCH answered with `reply` (the object after the patch).
    pub fn patch(path: &str, reply: serde_json::Value) -> Self {
        Self::new(Method::PATCH, path, 200, reply)
    }

    /// A POST of a new object to `path`, answered with the object itself.
    pub fn create(path: &str) -> Self {
        Self::new(Method::POST, path, 201, serde_json::Value::Null)
    }

    /// A PUT (replace) of `path`, answered with the object itself.
    pub fn replace(path: &str) -> Self {
        Self::new(Method::PUT, path, 200, serde_json::Value::Null)
    }

    /// An Event created in `namespace`.
    pub fn event(namespace: &str) -> Self {
        Self::create(&format!(
            "/apis/events.k8s.io/v1/namespaces/{namespace}/events"
        ))
    }
}

/// A request the scenario received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub content_type: String,
    pub body: serde_json::Value,
}

/// Serves `calls` in order and returns what was received; panics on an unexpected request or on
/// a call that does not come within one second (or its `within`).
pub fn scenario(
    mut handle: Handle,
    calls: Vec<Expect>,
) -> tokio::task::JoinHandle<(Vec<Seen>, Handle)> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        for call in calls {
            let (request, send) = tokio::time::timeout(call.within, handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {} {}", call.method, call.path))
                .expect("the client hung up");
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            assert_eq!(
                (&method, path.as_str()),
                (&call.method, call.path.as_str()),
                "unexpected request"
            );
            let content_type = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            // An Event is answered with itself, as the API server does.
            let reply = if call.reply.is_null() {
                body.clone()
            } else {
                call.reply
            };
            let response = Response::builder()
                .status(call.status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(response);
            seen.push(Seen {
                method,
                path,
                content_type,
                body,
            });
        }
        (seen, handle)
    })
}

/// Asserts that no further request arrives.
pub async fn no_more(handle: &mut Handle) {
    let next = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    if let Ok(Some((request, _))) = next {
        panic!(
            "unexpected extra request {} {}",
            request.method(),
            request.uri()
        );
    }
}
