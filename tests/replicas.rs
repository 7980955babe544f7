//! Three `rolegate serve` replicas (real processes, one config and state directory, so one
//! signing key) in front of moto, with every STS call counted by a proxy between them and moto.
//! A server session is a pod's (its name and UID are session tags); the kubelet rotates the
//! pod's token, and each new token reaches the server as a new request:
//! - through one Service address (a per-connection round-robin proxy, as kube-proxy spreads
//!   connections), each rotated token lands on another replica, and each replica calls STS for
//!   the same session: three calls for one pod;
//! - with `--server-endpoints-dns` routing (here the resolver is a fixed list of the three
//!   replicas, the seam the system resolver sits behind), every token of a pod goes to the same
//!   replica: one STS call per pod session;
//! - with a replica stopped, every request still succeeds, and each session it held costs one
//!   more STS call, at the next replica in that session's order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{ISSUER, Serve, moto, resources, unique};
use rolegate::agent::routing::{rendezvous_order, routing_key};
use rolegate::agent::{Agent, FixedEndpoints, router};

const SUBJECTS: usize = 10;

/// A proxy in front of moto that counts `AssumeRoleWithSAML` calls.
async fn counting_proxy(upstream: String) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (counter, client, upstream) = (Arc::clone(&counter), client.clone(), upstream.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            if String::from_utf8_lossy(&body).contains("Action=AssumeRoleWithSAML") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            let mut forward = client.request(
                parts.method.clone(),
                format!("{upstream}{}", parts.uri.path_and_query().unwrap()),
            );
            for (name, value) in &parts.headers {
                if name != "host" && name != "content-length" {
                    forward = forward.header(name, value);
                }
            }
            let answer = forward.body(body).send().await.unwrap();
            let status = answer.status();
            let content_type = answer
                .headers()
                .get("content-type")
                .cloned()
                .unwrap_or(axum::http::HeaderValue::from_static("text/xml"));
            let bytes = answer.bytes().await.unwrap();
            (status, [("content-type", content_type)], bytes)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

/// One address in front of the replicas that hands each new connection to the next one, as a
/// ClusterIP Service spreads connections over its endpoints.
async fn round_robin_service(replicas: Vec<SocketAddr>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut next = 0;
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let target = replicas[next % replicas.len()];
            next += 1;
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

async fn serve_agent(agent: Agent) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(agent)).await.unwrap() });
    url
}

/// The token of pod `pod` of service account `s{i}` of team-a after `rotation` rotations by
/// the kubelet (each a different token for the same pod).
fn token(key: &str, i: usize, pod: &str, rotation: i64) -> String {
    let spec = rolegate::dev::TokenSpec {
        issuer: ISSUER.into(),
        subject: format!("system:serviceaccount:team-a:s{i}"),
        audiences: vec!["rolegate".into()],
        ttl_seconds: 3600 + rotation,
        pod: Some(pod.into()),
        kid: None,
    };
    rolegate::dev::token(key, &spec, jiff::Timestamp::now()).unwrap()
}

/// A node's agent asking through the Service address.
async fn plain_agent(service: SocketAddr) -> String {
    serve_agent(Agent::new(&format!("http://{service}"), None).unwrap()).await
}

/// A node's agent routing over the replicas (the fixed list stands for the headless Service's
/// name, which the system resolver resolves in a cluster). The URL names the Service: requests
/// go to a replica's address and keep that name.
async fn routed_agent(replicas: &[SocketAddr]) -> String {
    let agent = Agent::new("http://rolegate-server.rolegate.svc", None)
        .unwrap()
        .with_endpoints(Arc::new(FixedEndpoints(replicas.to_vec())));
    agent.refresh_endpoints().await;
    serve_agent(agent).await
}

async fn ask(agent: &str, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{agent}/v1/credentials"))
        .header("Authorization", token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_route_each_subject_to_one_replica_and_survive_losing_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&config).unwrap();
    let sa_key = rolegate::dev::generate_key().unwrap();
    std::fs::write(
        config.join("jwks.json"),
        rolegate::dev::jwks(&sa_key).unwrap().to_string(),
    )
    .unwrap();
    let subjects: Vec<String> = (0..SUBJECTS)
        .map(|i| format!("{{kind: ServiceAccount, name: s{i}}}"))
        .collect();
    std::fs::write(
        config.join("resources.yaml"),
        format!(
            "{}\n---\napiVersion: rolegate.dev/v1alpha1\nkind: RoleMapping\nmetadata: {{name: many, namespace: team-a}}\nspec:\n  provider: acct\n  roleArn: {}\n  subjects: [{}]\n",
            resources(&unique("replicas"), false),
            common::ROLE,
            subjects.join(", ")
        ),
    )
    .unwrap();
    let (aws, sts_calls) = counting_proxy(moto()).await;
    // One after the other: the first registers the IdP in IAM, the others find it registered.
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Serve::start(&config, &state, &aws, &[]).await);
    }
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();

    // The kubelet rotates a pod's token every ~48 minutes, long after the agent's idle
    // connection to the server is closed (90 s): each rotated token reaches the server over a
    // new connection, which a fresh agent here stands for.

    // 1. Through one Service address: one pod of s0, its token rotated twice.
    let service = round_robin_service(addrs.clone()).await;
    for rotation in 0..3 {
        let agent = plain_agent(service).await;
        let (status, body) = ask(&agent, &token(&sa_key, 0, "s0-pod", rotation)).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        sts_calls.load(Ordering::SeqCst),
        3,
        "behind one Service address, one pod's session costs an STS call at each replica"
    );

    // 2. Routed: one pod of each of s1..s9, on three nodes, each token rotated twice, all
    // asked at once.
    let pod = |i: usize| format!("s{i}-pod");
    let before = sts_calls.load(Ordering::SeqCst);
    let mut asks = Vec::new();
    for rotation in 0..3 {
        for i in 1..SUBJECTS {
            asks.push((
                routed_agent(&addrs).await,
                token(&sa_key, i, &pod(i), rotation),
            ));
        }
    }
    let answers = futures::future::join_all(asks.iter().map(|(a, t)| ask(a, t))).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    assert_eq!(
        sts_calls.load(Ordering::SeqCst) - before,
        SUBJECTS - 1,
        "one STS call per pod session, for {} requests",
        asks.len()
    );
    // The pods spread over the replicas: more than one of them called STS.
    let owner =
        |i: usize| rendezvous_order(&routing_key(&token(&sa_key, i, &pod(i), 0), None), &addrs)[0];
    let owners: std::collections::BTreeSet<SocketAddr> = (1..SUBJECTS).map(owner).collect();
    assert!(owners.len() >= 2, "{owners:?}");

    // 3. The replica holding s1's session stops. Every pod's next token still gets
    // credentials, and only the sessions it held cost a call again, once each, at the next
    // replica in their order.
    let gone = owner(1);
    let index = replicas.iter().position(|r| r.addr == gone).unwrap();
    drop(replicas.remove(index));
    let orphaned = (1..SUBJECTS).filter(|i| owner(*i) == gone).count();
    let before = sts_calls.load(Ordering::SeqCst);
    let mut asks = Vec::new();
    for rotation in 3..5 {
        for i in 1..SUBJECTS {
            asks.push((
                routed_agent(&addrs).await,
                token(&sa_key, i, &pod(i), rotation),
            ));
        }
    }
    let answers = futures::future::join_all(asks.iter().map(|(a, t)| ask(a, t))).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "no error while a replica is down: {body}");
    }
    assert_eq!(
        sts_calls.load(Ordering::SeqCst) - before,
        orphaned,
        "each session of the stopped replica moved to one next replica"
    );
}

/// The agent connects to a replica's address but verifies the certificate against the server
/// URL's name, the Service's DNS name the serving certificate is issued for (it names no pod
/// address). A replica serving a certificate for another name is not trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_agent_verifies_the_replica_by_the_services_name() {
    let now = jiff::Timestamp::now();
    let ca = rolegate::pki::new_ca(now, "rolegate CA").unwrap();
    let service = "rolegate-server.rolegate.svc";
    let good = rolegate::pki::issue_serving(&ca, &[service.to_owned()], now).unwrap();
    let h = common::Harness::start_tls(
        &resources(&unique("routed-tls"), false),
        &good.cert_pem,
        &good.key_pem,
    )
    .await;
    let addr: SocketAddr = h.url.trim_start_matches("https://").parse().unwrap();
    let agent = Agent::new(&format!("https://{service}"), Some(ca.cert_pem.as_bytes()))
        .unwrap()
        .with_endpoints(Arc::new(FixedEndpoints(vec![addr])));
    agent.refresh_endpoints().await;
    let url = serve_agent(agent).await;
    let (status, body) = ask(&url, &h.sa_token("team-a", "app")).await;
    assert_eq!(status, 200, "{body}");

    let other = rolegate::pki::issue_serving(&ca, &["other.rolegate.svc".to_owned()], now).unwrap();
    let wrong = common::Harness::start_tls(
        &resources(&unique("routed-tls"), false),
        &other.cert_pem,
        &other.key_pem,
    )
    .await;
    let wrong_addr: SocketAddr = wrong.url.trim_start_matches("https://").parse().unwrap();
    let agent = Agent::new(&format!("https://{service}"), Some(ca.cert_pem.as_bytes()))
        .unwrap()
        .with_endpoints(Arc::new(FixedEndpoints(vec![wrong_addr])));
    agent.refresh_endpoints().await;
    let url = serve_agent(agent).await;
    let (status, body) = ask(&url, &wrong.sa_token("team-a", "app")).await;
    assert_eq!(
        status, 502,
        "a certificate for another name is refused: {body}"
    );
    assert!(body.contains("server_unreachable"), "{body}");
}
