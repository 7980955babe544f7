//! `rolegate serve --config DIR`, the binary itself: it registers the IdP in IAM (moto) at start,
//! re-registers when the files change, keeps its generated key across restarts, rejects a broken
//! change while serving the previous resources, and serves credentials.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ACCOUNT, ISSUER, Serve, moto, resources, unique};
use rolegate::aws::SamlProviders as _;
use rolegate::aws::sdk::{IamAccess, SdkSamlProviders};

async fn start(config: &Path, state: &Path) -> Serve {
    Serve::start(config, state, &moto(), &["--poll-seconds", "1"]).await
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_registers_reloads_and_serves() {
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
    let name = unique("standalone");
    let yaml = resources(&name, false);
    std::fs::write(config.join("resources.yaml"), &yaml).unwrap();
    let arn = format!("arn:aws:iam::{ACCOUNT}:saml-provider/{name}");
    let iam = SdkSamlProviders::new(&IamAccess {
        endpoint_url: Some(moto()),
        ..IamAccess::default()
    })
    .await;

    let server = start(&config, &state).await;
    let metadata = reqwest::get(format!("{}/samlp/metadata/aws", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let held = iam.get(&arn).await.unwrap().expect("registered at start");
    assert_eq!(held.metadata, metadata);

    // Credentials through the binary.
    let spec = rolegate::dev::TokenSpec {
        issuer: ISSUER.into(),
        subject: "system:serviceaccount:team-a:app".into(),
        audiences: vec!["rolegate".into()],
        ttl_seconds: 600,
        pod: None,
        kid: None,
    };
    let token = rolegate::dev::token(&sa_key, &spec, jiff::Timestamp::now()).unwrap();
    let response = reqwest::Client::new()
        .get(format!("{}/v1/credentials", server.url))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let issued: serde_json::Value = response.json().await.unwrap();
    // With ROLEGATE_LOG_FORMAT=json every line is a JSON object; the issuance names the subject,
    // role, session and AccessKeyId (to join with CloudTrail), never the secret or the token.
    let log = std::fs::read_to_string(&server.log).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let issuance = lines
        .iter()
        .find(|l| l["message"] == "issued credentials")
        .unwrap_or_else(|| panic!("no issuance line in {log}"));
    assert_eq!(issuance["access_key_id"], issued["AccessKeyId"]);
    assert_eq!(issuance["subject"], "system:serviceaccount:team-a:app");
    assert_eq!(issuance["role"], common::ROLE);
    assert!(issuance["session"].is_string());
    for secret in [&issued["SecretAccessKey"], &issued["Token"]] {
        assert!(
            !log.contains(secret.as_str().unwrap()),
            "a secret reached the log"
        );
    }
    assert!(!log.contains(&token), "the token reached the log");

    // A broken change is rejected; the previous resources keep serving.
    std::fs::write(config.join("broken.yaml"), "kind: [unclosed").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = reqwest::get(format!("{}/samlp/metadata/aws", server.url))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    std::fs::remove_file(config.join("broken.yaml")).unwrap();

    // A change to the SAMLApp changes the metadata, which is pushed to IAM.
    let changed = yaml.replacen(
        "spec:\n  signResponse: false",
        "spec:\n  signResponse: false\n  nameIdentifierFormat: urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
        1,
    );
    assert_ne!(changed, yaml);
    std::fs::write(config.join("resources.yaml"), &changed).unwrap();
    eventually("IAM holds the changed metadata", || async {
        iam.get(&arn)
            .await
            .unwrap()
            .is_some_and(|p| p.metadata.contains("emailAddress"))
    })
    .await;

    // Drift: the provider is deleted behind rolegate's back; a restart recreates it with the same
    // key, which the state directory kept.
    iam.delete(&arn).await.unwrap();
    drop(server);
    let server = start(&config, &state).await;
    let again = reqwest::get(format!("{}/samlp/metadata/aws", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        common::first_cert_pem(&again),
        common::first_cert_pem(&metadata),
        "the key survived the restart"
    );
    assert_eq!(
        iam.get(&arn).await.unwrap().expect("recreated").metadata,
        again
    );
}

#[test]
fn serve_refuses_an_invalid_config_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        "apiVersion: rolegate.dev/v1alpha1\nkind: SAMLApp\nmetadata: {name: aws}\nspec: {lifetimeSeconds: many}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rolegate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("app.yaml, document 1"), "{err}");
    assert!(
        err.contains("lifetimeSeconds") || err.contains("invalid type"),
        "{err}"
    );
    assert!(!dir.path().join("state").exists(), "nothing was generated");
}

/// The state directory goes through the controller's rotation lifecycle on a pinned clock:
/// Next published a lead time before it signs, then promoted with the old certificate still
/// published as Retiring for a lead time, then dropped. The metadata carries both certificates
/// through the switch.
#[test]
fn the_state_directory_rotates_its_signing_key_when_due() {
    use rolegate::crd::CertificateState::{Active, Next, Retiring};
    let config = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("app.yaml"),
        "apiVersion: rolegate.dev/v1alpha1\nkind: SAMLApp\nmetadata: {name: aws}\nspec:\n  signing: {validityDays: 10, rotationLeadDays: 2}\n",
    )
    .unwrap();
    let snapshot = rolegate::store::files::load_dir(config.path()).unwrap();
    let t0 = jiff::Timestamp::from_second(1_790_000_000).unwrap();
    let day = jiff::SignedDuration::from_hours(24);
    let load = |now: jiff::Timestamp| {
        let ring =
            rolegate::standalone::load_keys(&snapshot, state.path(), "rolegate", now).unwrap();
        let keys = ring.get("aws").unwrap().clone();
        let states: Vec<_> = keys.published.iter().map(|(_, _, s)| *s).collect();
        (keys, states)
    };
    let fingerprint = |keys: &rolegate::idp::AppKeys| keys.active.fingerprint().to_owned();

    let (first, states) = load(t0);
    assert_eq!(states, vec![Active]);
    // Still more than two lead times left: nothing moves, and the key is the one on disk.
    let (keys, states) = load(t0 + day * 5);
    assert_eq!(
        (fingerprint(&keys), states),
        (fingerprint(&first), vec![Active])
    );

    // Four days left: a Next key is published but does not sign yet.
    let (keys, states) = load(t0 + day * 6 + jiff::SignedDuration::from_hours(1));
    assert_eq!(states, vec![Active, Next]);
    assert_eq!(fingerprint(&keys), fingerprint(&first));
    let metadata = rolegate::idp::app_metadata(
        snapshot.apps.get("aws").unwrap(),
        &keys,
        "http://127.0.0.1:8080",
    )
    .unwrap();
    assert_eq!(
        metadata.matches("<ds:X509Certificate>").count(),
        2,
        "{metadata}"
    );
    let dir = state.path().join("aws");
    assert!(dir.join("next.key").exists() && dir.join("rotation.json").exists());
    use std::os::unix::fs::PermissionsExt as _;
    for key in ["tls.key", "next.key"] {
        let mode = std::fs::metadata(dir.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    // A lead time later the Next key signs and the old certificate is Retiring.
    let (promoted, states) = load(t0 + day * 8 + jiff::SignedDuration::from_hours(2));
    assert_eq!(states, vec![Active, Retiring]);
    assert_ne!(fingerprint(&promoted), fingerprint(&first));
    assert!(!dir.join("next.key").exists());
    // A restart reads the same state: no second rotation.
    let (again, states) = load(t0 + day * 8 + jiff::SignedDuration::from_hours(3));
    assert_eq!(
        (fingerprint(&again), states),
        (fingerprint(&promoted), vec![Active, Retiring])
    );

    // Another lead time later the Retiring certificate is dropped.
    let (keys, states) = load(t0 + day * 10 + jiff::SignedDuration::from_hours(3));
    assert_eq!(
        (fingerprint(&keys), states),
        (fingerprint(&promoted), vec![Active])
    );
    assert!(!dir.join("retiring.crt").exists());
    assert!(!state.path().join("aws.new").exists() && !state.path().join("aws.old").exists());
}

fn aws_cli(args: &[&str]) -> serde_json::Value {
    let out = Command::new(common::venv().join("bin/aws"))
        .args(args)
        .args(["--output", "json"])
        .env("AWS_ENDPOINT_URL", moto())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_revokes_the_sessions_of_a_mapping_removed_from_the_files() {
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
    let role = unique("app-standalone");
    aws_cli(&[
        "iam",
        "create-role",
        "--role-name",
        &role,
        "--assume-role-policy-document",
        r#"{"Version":"2012-10-17","Statement":[]}"#,
    ]);
    let yaml = resources(&unique("standalone-rev"), false).replace(
        &format!("roleArn: {}\n  subjects: [{{kind: ServiceAccount, name: app}}, {{kind: ServiceAccount, name: multi}}]", common::ROLE),
        &format!("roleArn: arn:aws:iam::{ACCOUNT}:role/{role}\n  subjects: [{{kind: ServiceAccount, name: app}}, {{kind: ServiceAccount, name: multi}}]"),
    );
    assert!(yaml.contains(&role), "the fixture changed");
    std::fs::write(config.join("resources.yaml"), &yaml).unwrap();
    let server = start(&config, &state).await;
    let spec = rolegate::dev::TokenSpec {
        issuer: ISSUER.into(),
        subject: "system:serviceaccount:team-a:app".into(),
        audiences: vec!["rolegate".into()],
        ttl_seconds: 600,
        pod: None,
        kid: None,
    };
    let token = rolegate::dev::token(&sa_key, &spec, jiff::Timestamp::now()).unwrap();
    let credentials = async || {
        reqwest::Client::new()
            .get(format!("{}/v1/credentials", server.url))
            .header("Authorization", &token)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(credentials().await, 200);

    // The mapping disappears from the files.
    let start_of_mapping = yaml.find("metadata: {name: app-reader").unwrap();
    let end_of_mapping = start_of_mapping + yaml[start_of_mapping..].find("---").unwrap();
    let without = format!(
        "{}{}",
        &yaml[..start_of_mapping],
        &yaml[end_of_mapping + 3..]
    )
    .replacen(
        "apiVersion: rolegate.dev/v1alpha1\nkind: RoleMapping\n\n",
        "",
        1,
    );
    let deleted_before = jiff::Timestamp::now();
    std::fs::write(config.join("resources.yaml"), &without).unwrap();
    eventually("the role holds a revocation policy", || async {
        aws_cli(&["iam", "list-role-policies", "--role-name", &role])["PolicyNames"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    })
    .await;
    assert_eq!(credentials().await, 403, "the server refuses");
    let names = aws_cli(&["iam", "list-role-policies", "--role-name", &role]);
    let name = names["PolicyNames"][0].as_str().unwrap();
    assert!(name.starts_with("rolegate-revoke-"), "{names}");
    let held = aws_cli(&[
        "iam",
        "get-role-policy",
        "--role-name",
        &role,
        "--policy-name",
        name,
    ]);
    let condition = &held["PolicyDocument"]["Statement"][0]["Condition"];
    assert_eq!(
        condition["StringEquals"]["saml:sub"],
        serde_json::json!([
            "system:serviceaccount:team-a:app",
            "system:serviceaccount:team-a:multi"
        ])
    );
    let issued: jiff::Timestamp = condition["DateLessThan"]["aws:TokenIssueTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        issued.as_second() >= deleted_before.as_second() && issued <= jiff::Timestamp::now(),
        "{issued} is the time of the reload"
    );
}
