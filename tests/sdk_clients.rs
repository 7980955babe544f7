//! Unmodified AWS SDK clients (boto3, the AWS CLI, aws-sdk-rust, the JavaScript SDK v3) get credentials from
//! `/v1/credentials` through their container-credentials provider, configured only through the
//! two variables the webhook injects, and call `sts get-caller-identity` on moto with them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{Harness, moto, resources, run, unique, venv, write};

const EXPECTED_ARN: &str = "arn:aws:sts::123456789012:assumed-role/app-reader/team-a.app";

/// Runs `command` as a pod would: an environment holding only PATH, HOME and the variables the
/// webhook injects (plus the emulator's endpoint and a region).
async fn run_in_pod(h: &Harness, mut command: Command) -> (bool, String, String) {
    let token = write(h.dir.path(), "token", &h.sa_token("team-a", "app"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", h.dir.path())
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/v1/credentials", h.url),
        )
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token)
        .env("AWS_ENDPOINT_URL", moto())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    tokio::task::spawn_blocking(move || run(&mut command))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3() {
    let h = Harness::start(&resources(&unique("boto3"), false)).await;
    let script = "import boto3, json\n\
                  s = boto3.Session()\n\
                  method = s.get_credentials().method\n\
                  arn = s.client('sts').get_caller_identity()['Arn']\n\
                  print(json.dumps({'method': method, 'arn': arn}))";
    let mut command = Command::new(venv().join("bin/python"));
    command.arg("-c").arg(script);
    let (ok, out, err) = run_in_pod(&h, command).await;
    assert!(ok, "boto3 failed: {err}");
    let seen: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(seen["method"], "container-role");
    assert_eq!(seen["arn"], EXPECTED_ARN);
    assert_eq!(h.metric("rolegate_sts_calls_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli() {
    let h = Harness::start(&resources(&unique("awscli"), false)).await;
    let mut command = Command::new(venv().join("bin/aws"));
    command.args(["sts", "get-caller-identity", "--output", "json"]);
    let (ok, out, err) = run_in_pod(&h, command).await;
    assert!(ok, "aws cli failed: {err}");
    let seen: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(seen["Arn"], EXPECTED_ARN);
    assert_eq!(h.metric("rolegate_sts_calls_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sdk_rust() {
    // The probe is an example of this package: built by `cargo test --all-targets`, or here.
    let target = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let probe = target.join("examples/sdk_probe");
    if !probe.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let (ok, _, err) = run(Command::new(cargo).args(["build", "--example", "sdk_probe"]));
        assert!(ok, "cannot build the sdk_probe example: {err}");
    }
    let h = Harness::start(&resources(&unique("rust"), false)).await;
    let (ok, out, err) = run_in_pod(&h, Command::new(probe)).await;
    assert!(ok, "aws-sdk-rust failed: {err}");
    assert_eq!(out.trim(), EXPECTED_ARN);
    assert_eq!(h.metric("rolegate_sts_calls_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_sdk_v3() {
    let h = Harness::start(&resources(&unique("js"), false)).await;
    let (ok, out, err) = run_in_pod(&h, common::js_whoami()).await;
    assert!(ok, "the JavaScript SDK failed: {err}");
    assert_eq!(out.trim(), EXPECTED_ARN);
    assert_eq!(h.metric("rolegate_sts_calls_total"), 1.0);
}
