//! `rolegate agent` on loopback in front of the server (over TLS, verified against a CA made here)
//! in front of moto: unmodified SDKs through it, caching and coalescing, a server that goes away,
//! a rotated token, and a server certificate the agent must not trust.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{Harness, ROLE, resources, unique, venv};
use rolegate::agent::{Agent, HostPolicy, RateLimit, router};

const EXPECTED_ARN: &str = "arn:aws:sts::123456789012:assumed-role/app-reader/team-a.app";

/// The operator's PKI as the controller runs it: a CA, and a serving certificate it signed, here
/// for 127.0.0.1: (CA PEM, server certificate PEM, server key PEM).
fn pki() -> (String, String, String) {
    let now = jiff::Timestamp::now();
    let ca = rolegate::pki::new_ca(now, "rolegate CA").unwrap();
    let serving = rolegate::pki::issue_serving(&ca, &["127.0.0.1".to_owned()], now).unwrap();
    (ca.cert_pem, serving.cert_pem, serving.key_pem)
}

struct Setup {
    h: Harness,
    agent_url: String,
}

/// Serves `agent` on a loopback port; returns its URL.
async fn serve_agent(agent: Agent) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(agent)).await.unwrap() });
    agent_url
}

async fn setup() -> Setup {
    let (ca, cert, key) = pki();
    let h = Harness::start_tls(&resources(&unique("agent"), false), &cert, &key).await;
    let agent = Agent::new(&h.url, Some(ca.as_bytes())).unwrap();
    let agent_url = serve_agent(agent).await;
    Setup { h, agent_url }
}

/// A token for the same service account that differs from every other one minted in this
/// second (its lifetime differs), as the kubelet's next token would.
fn another_token(h: &Harness) -> String {
    h.token("system:serviceaccount:team-a:app", &["rolegate"], 3000)
}

/// GET `url/v1/credentials` with `token`, the request shaped further by `edit`.
async fn get_with(
    url: &str,
    token: &str,
    edit: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> (u16, serde_json::Value) {
    let request = reqwest::Client::new()
        .get(format!("{url}/v1/credentials"))
        .header("Authorization", token);
    let response = edit(request).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn get(url: &str, token: &str) -> (u16, serde_json::Value) {
    get_with(url, token, |r| r).await
}

async fn in_pod(s: &Setup, command: Command) -> (bool, String, String) {
    common::run_in_pod(&s.h, &s.agent_url, command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmodified_sdks_get_credentials_through_the_agent() {
    let s = setup().await;
    let mut boto3 = Command::new(venv().join("bin/python"));
    boto3
        .arg("-c")
        .arg("import boto3; print(boto3.client('sts').get_caller_identity()['Arn'])");
    let (ok, out, err) = in_pod(&s, boto3).await;
    assert!(ok, "boto3: {err}");
    assert_eq!(out.trim(), EXPECTED_ARN);

    let mut cli = Command::new(venv().join("bin/aws"));
    cli.args([
        "sts",
        "get-caller-identity",
        "--query",
        "Arn",
        "--output",
        "text",
    ]);
    let (ok, out, err) = in_pod(&s, cli).await;
    assert!(ok, "aws cli: {err}");
    assert_eq!(out.trim(), EXPECTED_ARN);

    let (ok, out, err) = in_pod(&s, common::sdk_probe()).await;
    assert!(ok, "aws-sdk-rust: {err}");
    assert_eq!(out.trim(), EXPECTED_ARN);
    let (ok, out, err) = in_pod(&s, common::js_whoami()).await;
    assert!(ok, "the JavaScript SDK: {err}");
    assert_eq!(out.trim(), EXPECTED_ARN);
    // Four clients, four freshly minted tokens, one STS call, whose latency is recorded.
    assert_eq!(s.h.metric("rolegate_sts_calls_total"), 1.0);
    assert_eq!(s.h.metric("rolegate_sts_call_duration_seconds_count"), 1.0);
    assert!(s.h.metric("rolegate_sts_call_duration_seconds_sum") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_share_one_call_and_the_cache_outlives_the_server() {
    let mut s = setup().await;
    let token = s.h.sa_token("team-a", "app");
    let all = futures::future::join_all((0..200).map(|_| get(&s.agent_url, &token))).await;
    let keys: std::collections::BTreeSet<String> = all
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body["AccessKeyId"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(keys.len(), 1);
    assert_eq!(s.h.metric("rolegate_sts_calls_total"), 1.0);
    let server_calls = s.h.metric("rolegate_http_responses_total");
    assert_eq!(
        server_calls, 1.0,
        "200 concurrent first requests reached the server once"
    );
    // A later request is a cache hit, counted as one.
    let hits = agent_metric(&s.agent_url, "rolegate_agent_cache_hits_total").await;
    let misses = agent_metric(&s.agent_url, "rolegate_agent_cache_misses_total").await;
    let (status, body) = get(&s.agent_url, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        agent_metric(&s.agent_url, "rolegate_agent_cache_hits_total").await,
        hits + 1.0
    );
    assert_eq!(
        agent_metric(&s.agent_url, "rolegate_agent_cache_misses_total").await,
        misses
    );

    // The server goes away: cached credentials are still served...
    s.h.stop().await;
    let (status, body) = get(&s.agent_url, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["AccessKeyId"].as_str().unwrap(), keys.first().unwrap());
    // ...and a token the agent has not seen gets a clear error, not a hang.
    let (status, body) = get(&s.agent_url, &another_token(&s.h)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "server_unreachable");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("rolegate server cannot be reached"),
        "{body}"
    );
}

/// GET `url/v1/credentials?role=ROLE` with `token`.
async fn get_role(url: &str, token: &str, role: &str) -> (u16, serde_json::Value) {
    get_with(url, token, |r| r.query(&[("role", role)])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_asking_for_two_roles_gets_two_sessions_each_cached_apart() {
    let s = setup().await;
    let token = s.h.sa_token("team-a", "multi");
    let writer = format!("arn:aws:iam::{}:role/app-writer", common::ACCOUNT);
    let (status, reader_body) = get_role(&s.agent_url, &token, ROLE).await;
    assert_eq!(status, 200, "{reader_body}");
    let (status, writer_body) = get_role(&s.agent_url, &token, &writer).await;
    assert_eq!(status, 200, "{writer_body}");
    // The role is part of the agent's key: the second role is a miss with its own session.
    assert_ne!(reader_body["AccessKeyId"], writer_body["AccessKeyId"]);
    assert_eq!(
        agent_metric(&s.agent_url, "rolegate_agent_cache_misses_total").await,
        2.0
    );
    assert_eq!(s.h.metric("rolegate_sts_calls_total"), 2.0);
    // Each is then served from the cache, never the other's.
    for _ in 0..3 {
        assert_eq!(
            get_role(&s.agent_url, &token, ROLE).await.1["AccessKeyId"],
            reader_body["AccessKeyId"]
        );
        assert_eq!(
            get_role(&s.agent_url, &token, &writer).await.1["AccessKeyId"],
            writer_body["AccessKeyId"]
        );
    }
    assert_eq!(
        agent_metric(&s.agent_url, "rolegate_agent_cache_misses_total").await,
        2.0
    );
    assert_eq!(s.h.metric("rolegate_sts_calls_total"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_is_accepted_and_refusals_pass_through() {
    let s = setup().await;
    assert_eq!(
        get(&s.agent_url, &s.h.sa_token("team-a", "app")).await.0,
        200
    );
    // The kubelet rotates the projected token: the new one is forwarded once and accepted.
    let (status, _) = get(&s.agent_url, &another_token(&s.h)).await;
    assert_eq!(status, 200);
    assert_eq!(
        s.h.metric("rolegate_http_responses_total"),
        2.0,
        "the new token was forwarded once"
    );
    assert_eq!(
        s.h.metric("rolegate_sts_calls_total"),
        1.0,
        "the server's cache serves the same subject"
    );
    // The server's refusal reaches the SDK as is, and is not cached.
    let (status, body) = get(&s.agent_url, &s.h.sa_token("team-a", "stranger")).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["error_description"],
        "no RoleMapping names service account team-a/stranger"
    );
    let (status, body) = reqwest::get(format!("{}/v1/credentials", s.agent_url))
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 401);
    let body: serde_json::Value = body.json().await.unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused() {
    let (_, cert, key) = pki();
    let (other_ca, _, _) = pki();
    let h = Harness::start_tls(&resources(&unique("agent-ca"), false), &cert, &key).await;
    let agent = Agent::new(&h.url, Some(other_ca.as_bytes())).unwrap();
    let agent_url = serve_agent(agent).await;
    let (status, body) = get(&agent_url, &h.sa_token("team-a", "app")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "server_unreachable");
    assert_eq!(
        h.metric("rolegate_assertions_signed_total"),
        0.0,
        "the request never reached the server"
    );
    assert!(
        Agent::new("https://rolegate.example", None)
            .unwrap_err()
            .to_string()
            .contains("needs --ca-file")
    );
}

/// Polls `agent_url` until it answers `want` (the server's new certificate takes effect from the
/// next handshake, after the reload task has run).
async fn eventually(agent_url: &str, token: &str, want: u16) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = get(agent_url, token).await;
        if status == want {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} rather than {want}: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn agent_trusting(server: &str, ca_pem: &str) -> (Agent, String) {
    let agent = Agent::new(server, Some(ca_pem.as_bytes())).unwrap();
    let agent_url = serve_agent(agent.clone()).await;
    (agent, agent_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotation_keeps_agents_working_through_the_published_bundle() {
    let now = jiff::Timestamp::now();
    let old_ca = rolegate::pki::new_ca(now, "rolegate CA").unwrap();
    let old_serving =
        rolegate::pki::issue_serving(&old_ca, &["127.0.0.1".to_owned()], now).unwrap();
    let h = Harness::start_tls(
        &resources(&unique("agent-rotate"), false),
        &old_serving.cert_pem,
        &old_serving.key_pem,
    )
    .await;
    // The controller renews its CA: the bundle now holds the new CA first, then the old one.
    let new_ca = rolegate::pki::new_ca(now, "rolegate CA").unwrap();
    let bundle = rolegate::pki::bundle(&new_ca.cert_pem, Some(&old_ca.cert_pem), now);
    let (bundled, bundled_url) = agent_trusting(&h.url, &bundle).await;
    let (old_only, old_only_url) = agent_trusting(&h.url, &old_ca.cert_pem).await;
    let (new_only, new_only_url) = agent_trusting(&h.url, &new_ca.cert_pem).await;
    // Before the serving certificate is reissued: the bundle and the old CA work.
    eventually(&bundled_url, &h.sa_token("team-a", "app"), 200).await;
    eventually(&old_only_url, &another_token(&h), 200).await;
    let body = eventually(&new_only_url, &h.sa_token("team-a", "app"), 502).await;
    assert_eq!(body["error"], "server_unreachable");

    // The serving certificate is reissued by the new CA and served without a restart. Fresh
    // clients (an agent that re-read its bundle) make fresh handshakes.
    let new_serving =
        rolegate::pki::issue_serving(&new_ca, &["127.0.0.1".to_owned()], now).unwrap();
    h.renew_tls(&new_serving.cert_pem, &new_serving.key_pem);
    bundled.set_ca(bundle.as_bytes()).unwrap();
    new_only.set_ca(new_ca.cert_pem.as_bytes()).unwrap();
    old_only.set_ca(old_ca.cert_pem.as_bytes()).unwrap();
    let fresh = |n: i64| h.token("system:serviceaccount:team-a:app", &["rolegate"], 2000 + n);
    eventually(&new_only_url, &fresh(1), 200).await;
    let body = eventually(&old_only_url, &fresh(2), 502).await;
    assert_eq!(body["error"], "server_unreachable");
    let body = eventually(&bundled_url, &fresh(3), 200).await;
    assert!(body["AccessKeyId"].is_string(), "{body}");
    // A bundle without a certificate is refused and the agent keeps its previous trust.
    assert!(bundled.set_ca(b"not a certificate").is_err());
    eventually(&bundled_url, &fresh(4), 200).await;
}

#[derive(Debug)]
struct ManualClock(std::sync::atomic::AtomicI64);

impl rolegate::server::Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_second(self.0.load(std::sync::atomic::Ordering::SeqCst)).unwrap()
    }
}

impl ManualClock {
    fn set(&self, t: jiff::Timestamp) {
        self.0
            .store(t.as_second(), std::sync::atomic::Ordering::SeqCst);
    }
}

async fn agent_metric(agent_url: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{agent_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_server_down_cached_credentials_serve_until_they_expire_then_a_clear_error() {
    let (ca, cert, key) = pki();
    let mut h = Harness::start_tls(&resources(&unique("agent-expiry"), false), &cert, &key).await;
    let clock = Arc::new(ManualClock(std::sync::atomic::AtomicI64::new(
        jiff::Timestamp::now().as_second(),
    )));
    let agent = Agent::new(&h.url, Some(ca.as_bytes()))
        .unwrap()
        .with_clock(clock.clone());
    let agent_url = serve_agent(agent).await;

    let token = h.sa_token("team-a", "app");
    let (status, first) = get(&agent_url, &token).await;
    assert_eq!(status, 200, "{first}");
    let expiration: jiff::Timestamp = first["Expiration"].as_str().unwrap().parse().unwrap();
    h.stop().await;

    // Fresh: served from the cache without asking anyone.
    let (status, body) = get(&agent_url, &token).await;
    assert_eq!((status, &body["AccessKeyId"]), (200, &first["AccessKeyId"]));
    assert_eq!(
        agent_metric(&agent_url, "rolegate_agent_upstream_errors_total").await,
        0.0
    );

    // A minute before expiry a refresh is due; it fails, and the cached credentials are served.
    clock.set(expiration - jiff::SignedDuration::from_secs(60));
    let (status, body) = get(&agent_url, &token).await;
    assert_eq!((status, &body["AccessKeyId"]), (200, &first["AccessKeyId"]));
    assert_eq!(
        agent_metric(&agent_url, "rolegate_agent_upstream_errors_total").await,
        1.0
    );
    // The next requests do not pile onto the failing server: one attempt per retry interval.
    for _ in 0..20 {
        let (status, _) = get(&agent_url, &token).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        agent_metric(&agent_url, "rolegate_agent_upstream_errors_total").await,
        1.0
    );
    assert_eq!(
        agent_metric(&agent_url, "rolegate_agent_stale_served_total").await,
        21.0
    );
    clock.set(expiration - jiff::SignedDuration::from_secs(45));
    let (status, _) = get(&agent_url, &token).await;
    assert_eq!(status, 200);
    assert_eq!(
        agent_metric(&agent_url, "rolegate_agent_upstream_errors_total").await,
        2.0
    );

    // Expired: a clear error in the container-credentials format, never expired credentials.
    clock.set(expiration + jiff::SignedDuration::from_secs(1));
    let (status, body) = get(&agent_url, &token).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "server_unreachable");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with("rolegate server cannot be reached"),
        "{description}"
    );
    assert!(
        description.ends_with(&format!("(the cached credentials expired at {expiration})")),
        "{description}"
    );
    assert!(body.get("AccessKeyId").is_none());
}

/// An agent on a pinned clock in front of `server` (`ca` for https).
async fn agent_at(server: &str, ca: Option<&str>) -> (String, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock(std::sync::atomic::AtomicI64::new(
        jiff::Timestamp::now().as_second(),
    )));
    let agent = Agent::new(server, ca.map(str::as_bytes))
        .unwrap()
        .with_clock(clock.clone());
    (serve_agent(agent).await, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_drops_the_cached_credentials_and_reaches_the_sdk_as_is() {
    let (ca, cert, key) = pki();
    let mut h = Harness::start_tls(&resources(&unique("agent-refused"), false), &cert, &key).await;
    let (agent_url, clock) = agent_at(&h.url, Some(&ca)).await;
    // Two tokens of team-a/app (the kubelet's current and next one), each cached by the agent.
    let (first, second) = (h.sa_token("team-a", "app"), another_token(&h));
    let (status, cached) = get(&agent_url, &first).await;
    assert_eq!(status, 200, "{cached}");
    assert_eq!(get(&agent_url, &second).await.0, 200);
    let expiration: jiff::Timestamp = cached["Expiration"].as_str().unwrap().parse().unwrap();
    // From here on every request is due for a refresh.
    clock.set(expiration - jiff::SignedDuration::from_secs(60));

    // The Connection stops accepting the token's audience: the server answers 401, and the
    // agent hands the SDK exactly that, not the credentials it holds.
    h.change_resources(|yaml| yaml.replace("audiences: [rolegate]", "audiences: [elsewhere]"));
    let (status, body) = get(&agent_url, &second).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(
        body["error_description"],
        "token audience \"rolegate\" is not accepted by connection \"k8s\""
    );
    assert!(body.get("AccessKeyId").is_none(), "{body}");

    // The RoleMapping no longer names the service account: 403, passed through.
    h.change_resources(|yaml| {
        yaml.replace("audiences: [elsewhere]", "audiences: [rolegate]")
            .replace(
                "subjects: [{kind: ServiceAccount, name: app}, {kind: ServiceAccount, name: multi}]",
                "subjects: [{kind: ServiceAccount, name: multi}]",
            )
    });
    let (status, body) = get(&agent_url, &first).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "access_denied");
    assert_eq!(
        body["error_description"],
        "no RoleMapping names service account team-a/app"
    );
    assert!(body.get("AccessKeyId").is_none(), "{body}");
    assert_eq!(
        agent_metric(&agent_url, "rolegate_agent_refusals_evicted_total").await,
        2.0
    );
    assert_eq!(
        agent_metric(&agent_url, "rolegate_agent_stale_served_total").await,
        0.0
    );

    // Nothing of either is left: with the server gone, the agent has no credentials to hand
    // out for them (an outage serves only what is still cached).
    h.stop().await;
    for token in [&first, &second] {
        let (status, body) = get(&agent_url, token).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"], "server_unreachable");
        assert!(body.get("AccessKeyId").is_none(), "{body}");
    }
}

/// What sits between the agent and the server (a load balancer, a replica that crashed): it
/// forwards to `server` until `failing` is set, then answers 500 with a plain-text body.
async fn failing_in_front_of(server: &str) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::IntoResponse;
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (server, flag) = (server.to_owned(), Arc::clone(&failing));
    let app = axum::Router::new().route(
        "/v1/credentials",
        axum::routing::get(move |headers: HeaderMap, uri: Uri| {
            let (server, failing) = (server.clone(), Arc::clone(&flag));
            async move {
                if failing.load(std::sync::atomic::Ordering::SeqCst) {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "upstream crashed").into_response();
                }
                let answer = reqwest::Client::new()
                    .get(format!("{server}{uri}"))
                    .header("Authorization", headers["authorization"].as_bytes())
                    .send()
                    .await
                    .unwrap();
                let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
                (status, answer.bytes().await.unwrap()).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, failing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_500_is_an_outage_and_the_cached_credentials_are_served() {
    let h = Harness::start(&resources(&unique("agent-500"), false)).await;
    let (front, failing) = failing_in_front_of(&h.url).await;
    let (agent_url, clock) = agent_at(&front, None).await;
    let token = h.sa_token("team-a", "app");
    let (status, cached) = get(&agent_url, &token).await;
    assert_eq!(status, 200, "{cached}");
    let expiration: jiff::Timestamp = cached["Expiration"].as_str().unwrap().parse().unwrap();

    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    clock.set(expiration - jiff::SignedDuration::from_secs(60));
    let (status, body) = get(&agent_url, &token).await;
    assert_eq!(
        (status, &body["AccessKeyId"]),
        (200, &cached["AccessKeyId"])
    );
    // Past the retry interval the server is asked again, fails again, and the credentials are
    // still served until they expire.
    clock.set(expiration - jiff::SignedDuration::from_secs(45));
    let (status, body) = get(&agent_url, &token).await;
    assert_eq!(
        (status, &body["AccessKeyId"]),
        (200, &cached["AccessKeyId"])
    );
    assert_eq!(
        agent_metric(&agent_url, "rolegate_agent_upstream_errors_total").await,
        2.0
    );
    assert_eq!(
        agent_metric(&agent_url, "rolegate_agent_refusals_evicted_total").await,
        0.0
    );
    // Expired: the SDK gets the failure, in JSON it can print, never expired credentials.
    clock.set(expiration + jiff::SignedDuration::from_secs(1));
    let (status, body) = get(&agent_url, &token).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"], "server_error");
    assert_eq!(
        body["error_description"],
        format!(
            "rolegate server answered 500 Internal Server Error (the cached credentials expired at {expiration})"
        )
    );
    assert!(body.get("AccessKeyId").is_none());
}

/// Serves `agent` as `rolegate agent` does: with each connection's client address, which the
/// rate limit keys on.
async fn serve_agent_with_clients(agent: Agent) -> (String, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router(agent).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    (format!("http://{addr}"), addr)
}

async fn get_with_host(url: &str, token: &str, host: &str) -> (u16, serde_json::Value) {
    get_with(url, token, |r| r.header("Host", host)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_addressed_to_another_host_is_refused_before_the_token_is_used() {
    let h = Harness::start(&resources(&unique("agent-host"), false)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let agent = Agent::new(&h.url, None)
        .unwrap()
        .with_hosts(HostPolicy::for_listeners(&[addr], &[]));
    tokio::spawn(async move { axum::serve(listener, router(agent)).await.unwrap() });
    let url = format!("http://{addr}");
    let token = h.sa_token("team-a", "app");

    // DNS rebinding: a name the attacker controls, resolved to the agent's address, or the
    // agent's own address on another port.
    for host in [
        format!("rebind.attacker.example:{}", addr.port()),
        "rebind.attacker.example".to_owned(),
        format!("127.0.0.1:{}", addr.port() + 1),
        "127.0.0.2".to_owned(),
    ] {
        let (status, body) = get_with_host(&url, &token, &host).await;
        assert_eq!(status, 403, "{host}: {body}");
        assert_eq!(body["error"], "invalid_request");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("is not an address of this agent"),
            "{body}"
        );
    }
    assert_eq!(
        agent_metric(&url, "rolegate_agent_wrong_host_total").await,
        4.0
    );
    // Nothing was forwarded: the server issued nothing.
    assert_eq!(
        agent_metric(&url, "rolegate_agent_cache_misses_total").await,
        0.0
    );
    // The URI the webhook injects, an IP literal with the port, is answered.
    let (status, body) = get_with_host(&url, &token, &addr.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["AccessKeyId"].as_str().unwrap().len(), 20);
}

/// A client bound to `local` (another loopback address: another pod).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_other_clients_do_not() {
    let h = Harness::start(&resources(&unique("agent-rate"), false)).await;
    let limit = RateLimit {
        per_second: std::num::NonZeroU32::new(1).unwrap(),
        burst: std::num::NonZeroU32::new(3).unwrap(),
    };
    let agent = Agent::new(&h.url, None)
        .unwrap()
        .with_rate_limit(Some(limit));
    let (url, _) = serve_agent_with_clients(agent).await;
    let token = h.sa_token("team-a", "app");

    let noisy = client_from("127.0.0.1");
    let ask = |client: &reqwest::Client| {
        client
            .get(format!("{url}/v1/credentials"))
            .header("Authorization", &token)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(ask(&noisy).await.unwrap().status(), 200);
    }
    let refused = ask(&noisy).await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "throttled");
    assert!(body.get("AccessKeyId").is_none());

    // Another pod on the node (another source address) is not held back by the noisy one.
    let other = client_from("127.0.0.2");
    assert_eq!(ask(&other).await.unwrap().status(), 200);
    assert_eq!(
        agent_metric(&url, "rolegate_agent_rate_limited_total").await,
        1.0
    );
    // The noisy one is answered again once its rate allows.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    assert_eq!(ask(&noisy).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_token_costs_no_upstream_calls() {
    let h = Harness::start(&resources(&unique("agent-idle"), false)).await;
    let (agent_url, clock) = agent_at(&h.url, None).await;
    let token = h.sa_token("team-a", "app");
    let (status, body) = get(&agent_url, &token).await;
    assert_eq!(status, 200, "{body}");
    let issued = h.metric("rolegate_credentials_issued_total");
    let expiration: jiff::Timestamp = body["Expiration"].as_str().unwrap().parse().unwrap();
    // The pod is gone: its credentials pass the refresh point and expire with nobody asking.
    // The agent refreshes only on a request, so nothing is asked of the server.
    clock.set(expiration - jiff::SignedDuration::from_secs(60));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    clock.set(expiration + jiff::SignedDuration::from_secs(3600));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(h.metric("rolegate_credentials_issued_total"), issued);
    assert_eq!(
        agent_metric(&agent_url, "rolegate_agent_cache_misses_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_ipv4_only_node_the_agent_serves_ipv4_and_says_why_ipv6_is_skipped() {
    let h = Harness::start(&resources(&unique("agent-v4"), false)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // fd00:ec2::23 is not an address of this machine, as on a node without IPv6: binding it
    // fails with EADDRNOTAVAIL (or EAFNOSUPPORT without IPv6 at all).
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args(["agent", "--server", &h.url])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--listen", &format!("[fd00:ec2::23]:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let token = h.sa_token("team-a", "app");
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(response) = reqwest::Client::new()
            .get(format!("{url}/v1/credentials"))
            .header("Authorization", &token)
            .send()
            .await
        {
            answered = Some(response.status().as_u16());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(answered, Some(200));
    // The metrics listener (the node IP, for Prometheus) serves metrics and never credentials.
    let metrics = format!("http://127.0.0.1:{metrics_port}");
    let text = reqwest::get(format!("{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("rolegate_agent_cache_misses_total 1"),
        "{text}"
    );
    let status = reqwest::Client::new()
        .get(format!("{metrics}/v1/credentials"))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(logs.contains("fd00:ec2::23"), "{logs}");
    assert!(logs.contains("IPv4-only"), "{logs}");

    // With no address it can bind, the agent does not start, and says which.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args(["agent", "--server", &h.url])
        .args(["--listen", &format!("[fd00:ec2::23]:{port}")])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[fd00:ec2::23]"), "{stderr}");
}

#[tokio::test]
async fn the_startup_taint_is_removed_by_a_guarded_patch_retried_when_the_taints_changed() {
    use common::apiserver::{self, Expect};
    use rolegate::agent::node::{DEFAULT_TAINT_KEY, StartupTaint, remove_with_retries};

    let node = |taints: serde_json::Value| {
        serde_json::json!({"apiVersion": "v1", "kind": "Node",
                           "metadata": {"name": "ip-10-0-0-7", "resourceVersion": "1"},
                           "spec": {"taints": taints}})
    };
    let ours = serde_json::json!({"key": DEFAULT_TAINT_KEY, "effect": "NoSchedule"});
    let theirs = serde_json::json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"});
    let path = "/api/v1/nodes/ip-10-0-0-7";
    let conflict = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "Invalid", "code": 422, "message": "the server rejected our request: test operation failed"});
    let (client, handle) = apiserver::client();
    let server = apiserver::scenario(
        handle,
        vec![
            Expect::get(path, node(serde_json::json!([ours, theirs]))),
            // Meanwhile the node controller removed its own taint: the test at index 0 still
            // holds here, but the API server says the taints changed (the test failed).
            Expect {
                method: http::Method::PATCH,
                path: path.into(),
                status: 422,
                reply: conflict,
                within: std::time::Duration::from_secs(1),
            },
            Expect::get(
                path,
                node(serde_json::json!([
                    {"key": "example.com/other", "effect": "NoExecute"},
                    ours
                ])),
            ),
            Expect::patch(
                path,
                node(serde_json::json!([{"key": "example.com/other", "effect": "NoExecute"}])),
            ),
        ],
    );
    let taint = StartupTaint {
        node: "ip-10-0-0-7".into(),
        key: DEFAULT_TAINT_KEY.into(),
        effect: "NoSchedule".into(),
    };
    remove_with_retries(
        client,
        &taint,
        std::time::Duration::from_millis(10),
        std::time::Duration::from_millis(50),
    )
    .await;
    let (seen, mut handle) = server.await.unwrap();
    apiserver::no_more(&mut handle).await;
    assert_eq!(seen[1].content_type, "application/json-patch+json");
    assert_eq!(
        seen[1].body,
        serde_json::json!([
            {"op": "test", "path": "/spec/taints/0", "value": ours},
            {"op": "remove", "path": "/spec/taints/0"},
        ])
    );
    // After reading the node again, the patch names the taint's new index.
    assert_eq!(
        seen[3].body,
        serde_json::json!([
            {"op": "test", "path": "/spec/taints/1", "value": ours},
            {"op": "remove", "path": "/spec/taints/1"},
        ])
    );
}

#[tokio::test]
async fn an_address_another_agent_holds_stops_the_start_with_the_reason() {
    // The EKS Pod Identity agent holds 169.254.170.23:80 on every EKS node; here, a listener
    // of this test holds the port.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args(["agent", "--server", "http://127.0.0.1:9"])
        .args(["--listen", &addr.to_string()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{addr} is already in use on this node")),
        "{stderr}"
    );
    assert!(stderr.contains("EKS Pod Identity agent"), "{stderr}");
    // The way out names the chart's real values.
    assert!(stderr.contains("agent.address and agent.port"), "{stderr}");
}
