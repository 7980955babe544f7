//! Unmodified AWS SDK clients (boto3, the AWS CLI, aws-sdk-rust, the JavaScript SDK v3) get credentials from
//! `/v1/credentials` through their container-credentials provider, configured only through the
//! two variables the webhook injects, and call `sts get-caller-identity` on moto with them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{Harness, resources, unique, venv};

const EXPECTED_ARN: &str = "arn:aws:sts::123456789012:assumed-role/app-reader/team-a.app";

async fn run_in_pod(h: &Harness, command: Command) -> (bool, String, String) {
    common::run_in_pod(h, &h.url, command).await
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
    let h = Harness::start(&resources(&unique("rust"), false)).await;
    let (ok, out, err) = run_in_pod(&h, common::sdk_probe()).await;
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
