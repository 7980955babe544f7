//! The two processes of the cold-start storm benchmark (`scripts/bench-storm.sh`), apart from
//! rolegate itself:
//!
//! - `storm standin --listen ADDR`: an STS stand-in that answers `AssumeRoleWithSAML` at once
//!   (any other action gets `AccessDenied`), so STS latency hides none of rolegate's cost.
//!   `GET /calls` tells how many it answered.
//! - `storm load --url URL --key PEM --count N --concurrency C`: mints N service-account
//!   tokens for N distinct service accounts (`system:serviceaccount:NS:sa<i>`) before the
//!   clock starts, then sends each one `GET /v1/credentials` once, C in flight, and prints
//!   one JSON line: the time to serve all, the answers by status, and the errors.
//! - `storm soak --url URL --key PEM --seconds S --concurrency C`: for S seconds, first
//!   requests only: each request carries the token of a new pod of `sa0` (a session of its
//!   own, so one signature and one STS call each), minted as it goes; the same JSON line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::StreamExt as _;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn required(args: &[String], name: &str) -> String {
    arg(args, name).unwrap_or_else(|| panic!("{name} is required"))
}

const DENIED: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>the stand-in answers AssumeRoleWithSAML only</Message></Error><RequestId>0</RequestId></ErrorResponse>"#;

async fn standin(listen: &str) {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&calls);
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::post(move |body: axum::body::Bytes| {
                let calls = Arc::clone(&counted);
                async move {
                    let xml = [("content-type", "text/xml")];
                    let action: &[u8] = b"Action=AssumeRoleWithSAML";
                    if !body.windows(action.len()).any(|w| w == action) {
                        return (axum::http::StatusCode::FORBIDDEN, xml, DENIED.to_owned());
                    }
                    let n = calls.fetch_add(1, Ordering::Relaxed);
                    let expiration = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1))
                        .strftime("%Y-%m-%dT%H:%M:%SZ");
                    (
                        axum::http::StatusCode::OK,
                        xml,
                        format!(
                            r#"<AssumeRoleWithSAMLResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleWithSAMLResult><Issuer>standin</Issuer><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/storm/s{n}</Arn><AssumedRoleId>AROASTORM:s{n}</AssumedRoleId></AssumedRoleUser><Credentials><AccessKeyId>ASIASTORM{n:011}</AccessKeyId><SecretAccessKey>standin-secret-{n}</SecretAccessKey><SessionToken>standin-token-{n}</SessionToken><Expiration>{expiration}</Expiration></Credentials><Audience>https://signin.aws.amazon.com/saml</Audience><SubjectType>persistent</SubjectType><NameQualifier>standin</NameQualifier><Subject>s{n}</Subject></AssumeRoleWithSAMLResult><ResponseMetadata><RequestId>0</RequestId></ResponseMetadata></AssumeRoleWithSAMLResponse>"#
                        ),
                    )
                }
            }),
        )
        .route(
            "/calls",
            axum::routing::get(move || {
                let calls = Arc::clone(&calls);
                async move { calls.load(Ordering::Relaxed).to_string() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}

async fn load(args: &[String]) {
    let url = required(args, "--url");
    let key = std::fs::read_to_string(required(args, "--key")).unwrap();
    let issuer = arg(args, "--issuer")
        .unwrap_or_else(|| "https://kubernetes.default.svc.cluster.local".into());
    let namespace = arg(args, "--namespace").unwrap_or_else(|| "storm".into());
    let count: usize = required(args, "--count").parse().unwrap();
    let concurrency: usize = arg(args, "--concurrency").map_or(512, |c| c.parse().unwrap());
    let now = jiff::Timestamp::now();
    let minting = Instant::now();
    let tokens: Vec<String> = (0..count)
        .map(|i| {
            let spec = rolegate::dev::TokenSpec {
                issuer: issuer.clone(),
                subject: format!("system:serviceaccount:{namespace}:sa{i}"),
                audiences: vec!["rolegate".into()],
                ttl_seconds: 3600,
                pod: None,
                kid: None,
            };
            rolegate::dev::token(&key, &spec, now).unwrap()
        })
        .collect();
    let mint_seconds = minting.elapsed().as_secs_f64();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let target = format!("{}/v1/credentials", url.trim_end_matches('/'));
    let started = Instant::now();
    let answers: Vec<Result<u16, String>> = futures::stream::iter(tokens.iter())
        .map(|token| ask(&client, &target, token))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let answered = answers.len();
    let mut tally = Tally::default();
    for answer in answers {
        tally.add(answer);
    }
    let (statuses, errors) = (tally.statuses, tally.errors);
    println!(
        "{}",
        serde_json::json!({
            "requests": count,
            "answered": answered,
            "mint_seconds": mint_seconds,
            "ok": statuses.get("200").copied().unwrap_or(0),
            "statuses": statuses,
            "errors": errors,
            "seconds": seconds,
            "per_second": count as f64 / seconds,
            "concurrency": concurrency,
        })
    );
}

/// Counts answers by status and errors by message.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<String, usize>,
    errors: BTreeMap<String, usize>,
}

impl Tally {
    fn add(&mut self, answer: Result<u16, String>) {
        match answer {
            Ok(status) => *self.statuses.entry(status.to_string()).or_default() += 1,
            Err(e) => *self.errors.entry(e).or_default() += 1,
        }
    }
}

async fn ask(client: &reqwest::Client, target: &str, token: &str) -> Result<u16, String> {
    let response = client
        .get(target)
        .header("Authorization", token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status == 200 && !body.starts_with(b"{") {
        return Err("200 without a JSON body".into());
    }
    Ok(status)
}

async fn soak(args: &[String]) {
    let url = required(args, "--url");
    let key = Arc::new(std::fs::read_to_string(required(args, "--key")).unwrap());
    let issuer = arg(args, "--issuer")
        .unwrap_or_else(|| "https://kubernetes.default.svc.cluster.local".into());
    let namespace = arg(args, "--namespace").unwrap_or_else(|| "storm".into());
    let seconds: f64 = required(args, "--seconds").parse().unwrap();
    let concurrency: usize = arg(args, "--concurrency").map_or(32, |c| c.parse().unwrap());
    let client = reqwest::Client::new();
    let target = format!("{}/v1/credentials", url.trim_end_matches('/'));
    let next = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, target, key, issuer, namespace, next, tally) = (
                client.clone(),
                target.clone(),
                Arc::clone(&key),
                issuer.clone(),
                namespace.clone(),
                Arc::clone(&next),
                Arc::clone(&tally),
            );
            tokio::spawn(async move {
                while started.elapsed().as_secs_f64() < seconds {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let spec = rolegate::dev::TokenSpec {
                        issuer: issuer.clone(),
                        subject: format!("system:serviceaccount:{namespace}:sa0"),
                        audiences: vec!["rolegate".into()],
                        ttl_seconds: 3600,
                        pod: Some(format!("soak-{i}")),
                        kid: None,
                    };
                    let token = rolegate::dev::token(&key, &spec, jiff::Timestamp::now()).unwrap();
                    let answer = ask(&client, &target, &token).await;
                    tally.lock().unwrap().add(answer);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tally = tally.lock().unwrap();
    let requests: usize =
        tally.statuses.values().sum::<usize>() + tally.errors.values().sum::<usize>();
    println!(
        "{}",
        serde_json::json!({
            "requests": requests,
            "ok": tally.statuses.get("200").copied().unwrap_or(0),
            "statuses": tally.statuses,
            "errors": tally.errors,
            "seconds": elapsed,
            "per_second": requests as f64 / elapsed,
            "concurrency": concurrency,
        })
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("standin") => standin(&required(&args, "--listen")).await,
        Some("load") => load(&args).await,
        Some("soak") => soak(&args).await,
        _ => {
            eprintln!(
                "usage: storm standin --listen ADDR | storm load --url URL --key PEM --count N [--concurrency C] \
                 | storm soak --url URL --key PEM --seconds S [--concurrency C]  (both: [--namespace NS] [--issuer URL])"
            );
            std::process::exit(2);
        }
    }
}
