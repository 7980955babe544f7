//! The listeners of the real binaries, over real sockets: `rolegate serve --public-listen` keeps
//! the workload endpoints and `/metrics` off the public listener, every listener disconnects a
//! client that sends its headers too slowly and answers 408 to a request that takes too long,
//! and a listener at its connection cap closes the next connection at once (it does not queue
//! it), without starving the other listeners.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ISSUER, moto, resources, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A process of the binary, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `rolegate ARGS`, logging to `log`, and waits until `ready` answers 200.
async fn start(args: &[String], log: &Path, ready: &str) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args(args)
        .env("AWS_ENDPOINT_URL", moto())
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(ready).await
            && r.status() == 200
        {
            return running;
        }
        assert!(
            Instant::now() < deadline,
            "rolegate {args:?} did not become ready: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `rolegate serve` over the shared test resources, with a public listener.
struct Standalone {
    /// `--listen`.
    internal: String,
    /// `--public-listen`.
    public: String,
    sa_key: String,
    _dir: tempfile::TempDir,
    _process: Running,
}

impl Standalone {
    async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        let sa_key = rolegate::dev::generate_key().unwrap();
        std::fs::write(
            config.join("jwks.json"),
            rolegate::dev::jwks(&sa_key).unwrap().to_string(),
        )
        .unwrap();
        std::fs::write(
            config.join("resources.yaml"),
            resources(&unique("listeners"), false),
        )
        .unwrap();
        let (internal, public) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let mut args: Vec<String> = ["serve", "--listen", &internal, "--public-listen", &public]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect();
        args.extend([
            "--config".to_owned(),
            config.display().to_string(),
            "--state-dir".to_owned(),
            dir.path().join("state").display().to_string(),
        ]);
        let process = start(
            &args,
            &dir.path().join("serve.log"),
            &format!("http://{internal}/readyz"),
        )
        .await;
        Self {
            internal,
            public,
            sa_key,
            _dir: dir,
            _process: process,
        }
    }

    fn sa_token(&self) -> String {
        let spec = rolegate::dev::TokenSpec {
            issuer: ISSUER.into(),
            subject: "system:serviceaccount:team-a:app".into(),
            audiences: vec!["rolegate".into()],
            ttl_seconds: 3600,
            pod: Some("app-7d4b9c".into()),
            kid: None,
        };
        rolegate::dev::token(&self.sa_key, &spec, jiff::Timestamp::now()).unwrap()
    }
}

/// A client that opens a new connection for every request, so no idle pooled connection is
/// closed under it by the header-read timeout.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn admission_review() -> serde_json::Value {
    serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "namespace": "team-a", "operation": "CREATE",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "object": {"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": "app", "namespace": "team-a"},
                               "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "app"}]}}}})
}

/// The value of the sample written exactly `series` (name and labels).
fn metric_with(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_listener_serves_sign_in_and_metadata_but_no_workload_endpoint() {
    let s = Standalone::start(&[]).await;
    let http = client();
    let (public, internal) = (
        format!("http://{}", s.public),
        format!("http://{}", s.internal),
    );
    let token = s.sa_token();
    let delegation = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("id_token", token.as_str()),
        ("target", "aws"),
        ("client_id", "rolegate"),
        ("api_type", "aws"),
    ];

    // What a person and an Ingress need is on the public listener.
    let (status, metadata) = answer(http.get(format!("{public}/samlp/metadata/aws"))).await;
    assert_eq!(status, 200, "{metadata}");
    assert!(metadata.contains("IDPSSODescriptor"), "{metadata}");
    // The metadata names the public listener (the default --public-url), where people sign in.
    assert!(
        metadata.contains(&format!("Location=\"{public}/samlp/aws\"")),
        "{metadata}"
    );
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            answer(http.get(format!("{public}{path}"))).await.0,
            200,
            "{path}"
        );
    }
    let (status, page) = answer(http.get(format!("{public}/samlp/aws"))).await;
    assert_ne!(status, 404, "the sign-in page is public: {page}");
    let (status, page) = answer(http.get(format!("{public}/login/signout"))).await;
    assert_ne!(status, 404, "signing out is public: {page}");

    // Nothing a workload or the cluster uses is.
    let refused = [
        (
            "/v1/credentials",
            http.get(format!("{public}/v1/credentials"))
                .header("Authorization", &token),
        ),
        (
            "/delegation",
            http.post(format!("{public}/delegation")).form(&delegation),
        ),
        (
            "/admission/pods",
            http.post(format!("{public}/admission/pods"))
                .json(&admission_review()),
        ),
        ("/metrics", http.get(format!("{public}/metrics"))),
    ];
    for (path, request) in refused {
        let (status, body) = answer(request).await;
        assert_eq!(status, 404, "{path} on the public listener: {body}");
        assert!(!body.contains("AccessKeyId"), "{path}: {body}");
    }
    let (_, metrics) = answer(http.get(format!("{internal}/metrics"))).await;
    assert_eq!(
        metric(&metrics, "rolegate_assertions_signed_total"),
        0.0,
        "nothing was signed for the public listener's callers: {metrics}"
    );
    assert_eq!(metric(&metrics, "rolegate_sts_calls_total"), 0.0);

    // The internal listener serves the workloads, the webhook, metrics, health and metadata.
    let (status, body) = answer(
        http.get(format!("{internal}/v1/credentials"))
            .header("Authorization", &token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let credentials: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(credentials["AccessKeyId"].is_string(), "{body}");
    let (status, body) = answer(
        http.post(format!("{internal}/admission/pods"))
            .json(&admission_review()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let review: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        review["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    let (status, metrics) = answer(http.get(format!("{internal}/metrics"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(&metrics, "rolegate_sts_calls_total"),
        1.0,
        "{metrics}"
    );
    let (status, body) = answer(
        http.post(format!("{internal}/delegation"))
            .form(&delegation),
    )
    .await;
    assert_ne!(status, 404, "{body}");
    let (status, same) = answer(http.get(format!("{internal}/samlp/metadata/aws"))).await;
    assert_eq!((status, &same), (200, &metadata));
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            answer(http.get(format!("{internal}{path}"))).await.0,
            200,
            "{path}"
        );
    }
    // The sign-in pages moved to the public listener.
    assert_eq!(
        answer(http.get(format!("{internal}/samlp/aws"))).await.0,
        404
    );
}

/// Sends `head` (an incomplete request head) and then nothing; returns what the listener sent
/// before it closed the connection. Fails rather than hangs if it never does.
async fn stall_headers(addr: &str, head: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    // A guard against a hang, not a timed assertion: the listener's timeout is 1 s.
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received))
        .await
        .expect("a client sending its headers too slowly was never disconnected")
        .unwrap_or_default();
    received
}

/// Reads from `stream` until the end of a response head (or of the stream).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Sends one complete request on `stream` and reads its answer (keeping the connection open).
async fn healthz(stream: &mut TcpStream) -> Option<String> {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: rolegate\r\n\r\n")
        .await
        .ok()?;
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    while !received.ends_with(b"\r\n\r\nok") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        received.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8(received).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_disconnected_and_slow_requests_answered_408_on_every_listener() {
    let s = Standalone::start(&[
        "--header-read-timeout-seconds",
        "1",
        "--request-timeout-seconds",
        "2",
    ])
    .await;
    for addr in [&s.internal, &s.public] {
        // Headers begun and never finished: closed, with no answer.
        let received = stall_headers(addr, "GET /healthz HTTP/1.1\r\nHost: rolegate\r\n").await;
        assert_eq!(String::from_utf8_lossy(&received), "", "{addr}");
        // A connection that never sends a byte is closed too.
        assert_eq!(
            String::from_utf8_lossy(&stall_headers(addr, "").await),
            "",
            "{addr}"
        );
        // A client that sends its request in time is served.
        let mut stream = TcpStream::connect(addr.as_str()).await.unwrap();
        let answer = healthz(&mut stream).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }

    // A body that never arrives: the request ends with 408 when its time is up.
    let mut stream = TcpStream::connect(s.internal.as_str()).await.unwrap();
    stream
        .write_all(
            b"POST /delegation HTTP/1.1\r\nHost: rolegate\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=",
        )
        .await
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(30), read_head(&mut stream))
        .await
        .expect("a request whose body never arrives never ended");
    assert!(
        received.starts_with("HTTP/1.1 408 Request Timeout"),
        "{received}"
    );
}

/// A connection to `addr` that has been served once, so it holds a place under the cap. A
/// place another connection just gave up may take a moment to free: try again until then.
async fn admitted(addr: &str) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if let Some(answer) = healthz(&mut stream).await {
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
            return stream;
        }
        assert!(
            Instant::now() < deadline,
            "no place under the cap at {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens `cap` connections to `addr`, each holding its place.
async fn fill(addr: &str, cap: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..cap {
        held.push(admitted(addr).await);
    }
    held
}

/// A connection beyond the cap: the kernel completes the handshake, then the listener closes it
/// without reading the request or answering.
async fn assert_refused(addr: &str) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: rolegate\r\n\r\n")
        .await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received))
        .await
        .expect("a connection over the cap was left waiting instead of closed");
    assert!(
        read.is_ok() || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "closed or reset"
    );
    assert_eq!(
        String::from_utf8_lossy(&received),
        "",
        "no answer over the cap"
    );
}

/// Once a held connection ends, its place goes to the next connection.
async fn assert_place_freed(addr: &str, held: &mut Vec<TcpStream>) {
    drop(held.pop());
    held.push(admitted(addr).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_at_its_cap_closes_new_connections_and_the_other_listener_still_serves() {
    // Generous header time, so the held idle connections stay open for the whole test.
    let s = Standalone::start(&[
        "--max-connections",
        "3",
        "--header-read-timeout-seconds",
        "600",
    ])
    .await;
    // Nothing has reached the public listener yet (readiness was checked on the internal one).
    // A flood of it...
    let mut held = fill(&s.public, 3).await;
    assert_refused(&s.public).await;
    assert_refused(&s.public).await;
    // ...leaves the internal listener, with a cap of its own, serving the workloads.
    let mut internal = admitted(&s.internal).await;
    let served = healthz(&mut internal).await.unwrap();
    assert!(served.starts_with("HTTP/1.1 200 OK"), "{served}");
    let (status, metrics) = answer(client().get(format!("http://{}/metrics", s.internal))).await;
    assert_eq!(status, 200);
    assert_eq!(
        metric_with(
            &metrics,
            "rolegate_connections_refused_total{listener=\"public\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_place_freed(&s.public, &mut held).await;
}

/// `rolegate agent` on two loopback ports (each a listener with its own cap), forwarding to
/// `server`; readiness is checked on the second.
async fn agent(server: &str, extra: &[&str], log: &Path) -> (String, String, Running) {
    let (first, second) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut args: Vec<String> = [
        "agent", "--listen", &first, "--listen", &second, "--server", server,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let process = start(&args, log, &format!("http://{second}/healthz")).await;
    (first, second, process)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_bounds_slow_clients_slow_requests_and_connections_too() {
    let dir = tempfile::tempdir().unwrap();
    // A server that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://{}", silent.local_addr().unwrap());
    let (addr, _, _agent) = agent(
        &server,
        &[
            "--header-read-timeout-seconds",
            "1",
            "--request-timeout-seconds",
            "1",
        ],
        &dir.path().join("agent.log"),
    )
    .await;
    let received = stall_headers(&addr, "GET /v1/credentials HTTP/1.1\r\nHost: a\r\n").await;
    assert_eq!(String::from_utf8_lossy(&received), "");
    // The forwarded request outlives the agent's request timeout: the SDK gets 408 rather than
    // waiting on the server.
    let (status, body) = answer(
        client()
            .get(format!("http://{addr}/v1/credentials"))
            .header("Authorization", "a-token"),
    )
    .await;
    assert_eq!((status, body.as_str()), (408, ""));

    let (addr, other, _capped) = agent(
        &server,
        &[
            "--max-connections",
            "2",
            "--header-read-timeout-seconds",
            "600",
        ],
        &dir.path().join("capped.log"),
    )
    .await;
    let mut held = fill(&addr, 2).await;
    assert_refused(&addr).await;
    let (status, metrics) = answer(client().get(format!("http://{other}/metrics"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        metric_with(&metrics, "rolegate_agent_connections_refused_total"),
        Some(1.0),
        "{metrics}"
    );
    assert_place_freed(&addr, &mut held).await;
}
