//! STS throttling absorbed, not passed on. An STS stand-in (a real HTTP server answering
//! `AssumeRoleWithSAML` as STS does) allows a set rate, a token bucket of its own, and answers
//! AWS's `Throttling` error above it. Many distinct subjects ask for their first credentials at
//! once:
//! - within `--sts-max-wait` every one of them gets credentials, one accepted STS call each;
//! - once the pacer has adapted (one second after the first throttle), no second of the run
//!   sees more calls than the stand-in allows plus a margin;
//! - past the wait a caller gets 503 with `Retry-After`, nothing is cached, and asking again
//!   after that time succeeds.
//!
//! Counts and bounds only, with wide margins: the machine running this is shared and noisy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use common::{ACCOUNT, Harness, resources, unique};
use rolegate::pacing::PacerSettings;

const THROTTLED: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"#;

/// What the stand-in saw: each call's arrival and whether it was accepted.
#[derive(Default)]
struct Seen {
    calls: Vec<(Instant, bool)>,
    tokens: f64,
    last: Option<Instant>,
}

impl Seen {
    fn accepted(&self) -> usize {
        self.calls.iter().filter(|c| c.1).count()
    }
    fn throttled(&self) -> usize {
        self.calls.iter().filter(|c| !c.1).count()
    }
}

fn success(n: usize) -> String {
    let expiration = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    format!(
        r#"<AssumeRoleWithSAMLResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithSAMLResult>
    <Issuer>https://rolegate.test</Issuer>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::{ACCOUNT}:assumed-role/app-reader/s{n}</Arn>
      <AssumedRoleId>AROAEXAMPLE{n}:s{n}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIASTANDIN{n:08}</AccessKeyId>
      <SecretAccessKey>standin-secret-{n}</SecretAccessKey>
      <SessionToken>standin-token-{n}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <Audience>https://signin.aws.amazon.com/saml</Audience>
    <SubjectType>persistent</SubjectType>
    <NameQualifier>standin</NameQualifier>
    <Subject>s{n}</Subject>
  </AssumeRoleWithSAMLResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleWithSAMLResponse>"#
    )
}

/// An STS stand-in allowing `rate` calls per second with a burst of `burst`; its URL and log.
async fn throttling_sts(rate: f64, burst: f64) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen {
        tokens: burst,
        ..Seen::default()
    }));
    let log = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/",
        post(move || {
            let log = Arc::clone(&log);
            async move {
                let now = Instant::now();
                let (ok, n) = {
                    let mut s = log.lock().unwrap();
                    let elapsed = s.last.map_or(0.0, |l| (now - l).as_secs_f64());
                    s.tokens = (s.tokens + elapsed * rate).min(burst);
                    s.last = Some(now);
                    let ok = s.tokens >= 1.0;
                    if ok {
                        s.tokens -= 1.0;
                    }
                    s.calls.push((now, ok));
                    (ok, s.calls.len())
                };
                if ok {
                    (
                        axum::http::StatusCode::OK,
                        [("content-type", "text/xml")],
                        success(n),
                    )
                } else {
                    (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "text/xml")],
                        THROTTLED.to_owned(),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// The shared resources plus one RoleMapping granting `n` service accounts `s0`… of team-a.
fn many_subjects(n: usize) -> String {
    let subjects: Vec<String> = (0..n)
        .map(|i| format!("{{kind: ServiceAccount, name: s{i}}}"))
        .collect();
    format!(
        "{}\n---\napiVersion: rolegate.dev/v1alpha1\nkind: RoleMapping\nmetadata: {{name: many, namespace: team-a}}\nspec:\n  provider: acct\n  roleArn: {}\n  subjects: [{}]\n",
        resources(&unique("pace"), false),
        common::ROLE,
        subjects.join(", ")
    )
}

/// `GET /v1/credentials`: status, `Retry-After`, body.
async fn ask(h: &Harness, token: &str) -> (u16, Option<String>, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(format!("{}/v1/credentials", h.url))
        .header("Authorization", token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, retry_after, body)
}

/// Samples the queue-depth gauge until `stop`; returns the highest value seen.
fn watch_queue(
    h: &Harness,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<i64> {
    let metrics = Arc::clone(&h.state.metrics);
    tokio::spawn(async move {
        let mut peak = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(metrics.sts_queue_depth.get());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_first_requests_is_paced_to_what_sts_allows_and_all_succeed() {
    const SUBJECTS: usize = 100;
    const RATE: f64 = 20.0;
    const BURST: f64 = 5.0;
    let (sts, seen) = throttling_sts(RATE, BURST).await;
    let max_wait = Duration::from_secs(40);
    let pacing = PacerSettings {
        max_wait,
        ..PacerSettings::default()
    };
    let h = Harness::start_with_sts_pacing(&many_subjects(SUBJECTS), sts, pacing).await;
    let tokens: Vec<String> = (0..SUBJECTS)
        .map(|i| h.sa_token("team-a", &format!("s{i}")))
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak = watch_queue(&h, Arc::clone(&stop));

    let answers = futures::future::join_all(tokens.iter().map(|t| ask(&h, t))).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = peak.await.unwrap();

    for (status, _, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    let keys: std::collections::BTreeSet<&str> = answers
        .iter()
        .map(|a| a.2["AccessKeyId"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), SUBJECTS, "each subject has its own session");
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.accepted(),
        SUBJECTS,
        "one accepted STS call per subject"
    );
    assert!(seen.throttled() >= 1, "the stand-in throttled");
    assert_eq!(
        h.metric("rolegate_sts_throttles_total"),
        seen.throttled() as f64
    );
    assert_eq!(h.metric("rolegate_sts_queue_refusals_total"), 0.0);
    assert!(peak >= 1, "first requests queued (peak queue depth {peak})");
    assert_eq!(
        h.state.metrics.sts_queue_depth.get(),
        0,
        "the queue drained"
    );

    // Once adapted (one second after the first throttle), no one-second window sees more
    // calls than the stand-in allows plus a margin: 1.5 × its rate plus its burst.
    let first_throttle = seen.calls.iter().find(|c| !c.1).unwrap().0;
    let adapted = first_throttle + Duration::from_secs(1);
    let times: Vec<Instant> = seen.calls.iter().map(|c| c.0).collect();
    let mut busiest = 0;
    for (i, start) in times.iter().enumerate().filter(|(_, t)| **t >= adapted) {
        let in_window = times[i..]
            .iter()
            .take_while(|t| **t < *start + Duration::from_secs(1))
            .count();
        busiest = busiest.max(in_window);
    }
    let allowed = (1.5 * RATE + BURST) as usize;
    assert!(
        busiest <= allowed,
        "{busiest} calls in one second after adapting; the stand-in allows {RATE}/s (burst {BURST})"
    );
    // And most of what was sent after adapting was accepted: throttled calls after it stay
    // under a third of the accepted ones.
    let late: Vec<_> = seen.calls.iter().filter(|c| c.0 >= adapted).collect();
    let late_throttled = late.iter().filter(|c| !c.1).count();
    let late_accepted = late.len() - late_throttled;
    assert!(
        late_throttled * 3 <= late_accepted.max(3),
        "{late_throttled} throttled vs {late_accepted} accepted after adapting"
    );
    // Every subject was served; the one second of adaptation aside, the run lasted about
    // SUBJECTS / RATE seconds. Bound it generously: it is well inside the maximum wait.
    let span = *times.last().unwrap() - times[0];
    eprintln!(
        "{} calls ({} throttled) over {span:?}; busiest second after adapting: {busiest}; \
         after adapting {late_accepted} accepted, {late_throttled} throttled; peak queue {peak}",
        seen.calls.len(),
        seen.throttled()
    );
    assert!(span < max_wait, "{span:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_maximum_wait_a_caller_gets_503_with_retry_after_and_nothing_is_cached() {
    const SUBJECTS: usize = 30;
    let (sts, seen) = throttling_sts(2.0, 1.0).await;
    let pacing = PacerSettings {
        max_wait: Duration::from_secs(2),
        ..PacerSettings::default()
    };
    let h = Harness::start_with_sts_pacing(&many_subjects(SUBJECTS), sts, pacing).await;
    let tokens: Vec<String> = (0..SUBJECTS)
        .map(|i| h.sa_token("team-a", &format!("s{i}")))
        .collect();
    let answers = futures::future::join_all(tokens.iter().map(|t| ask(&h, t))).await;

    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let refused: Vec<_> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.0 != 200)
        .collect();
    assert!(ok >= 1, "some subjects were served within the wait");
    // 2 calls per second for 2 seconds cannot serve 30 subjects.
    assert!(refused.len() >= SUBJECTS / 2, "{} refused", refused.len());
    for (_, (status, retry_after, body)) in &refused {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("STS is throttling"),
            "{body}"
        );
        let seconds: u64 = retry_after
            .as_deref()
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=60).contains(&seconds), "Retry-After {seconds}");
    }
    assert_eq!(
        h.metric("rolegate_sts_queue_refusals_total"),
        refused.len() as f64
    );
    assert_eq!(
        seen.lock().unwrap().accepted(),
        ok,
        "one accepted call per subject served"
    );
    h.state.issuer.cache.sync().await;
    assert_eq!(
        h.state.issuer.cache.len(),
        ok as u64,
        "only the sessions served are cached"
    );

    // A refused subject that comes back after Retry-After is served.
    let (index, (_, retry_after, _)) = refused[0];
    let wait: u64 = retry_after.as_deref().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(wait + 1)).await;
    let (status, _, body) = ask(&h, &tokens[index]).await;
    assert_eq!(status, 200, "{body}");
}
