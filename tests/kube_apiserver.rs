//! The test API server's own tests: what a real API server answers, checked with kube's client
//! and the real kubectl.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "kube/mod.rs"]
mod kube_server;

use kube_server::{Identity, Options, TestApiServer};

fn options() -> Options {
    Options {
        crds_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds"),
        services: std::collections::HashMap::new(),
    }
}

#[tokio::test]
async fn starts_and_serves_discovery() {
    let server = TestApiServer::start(options()).await;
    let client = server.client(&Identity::Admin).await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.minor, "35");
}
