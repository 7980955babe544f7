//! `rolegate credentials` on a laptop: the unmodified AWS CLI runs it as its `credential_process`;
//! it signs the person in at a real OpenID provider (`oidc-provider`, a public client with PKCE
//! and a loopback redirect), exchanges the id_token at `/delegation`, and the CLI sees the mapped
//! role from moto. The "browser" that `--browser` opens hands the URL to the test, which signs in
//! at the provider's page like a person would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod login_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Harness, moto, venv};
use login_support::*;

const AWS_ACS: &str = "https://signin.aws.amazon.com/saml";

struct Env {
    h: Harness,
    _op: Peer,
    op_issuer: String,
    dir: tempfile::TempDir,
}

async fn setup() -> Env {
    for _ in 0..5 {
        let op_port = free_port();
        let op_issuer = format!("http://127.0.0.1:{op_port}");
        let h = Harness::start(&resources(&op_issuer, None, AWS_ACS)).await;
        if let Some(op) = start_op(op_port, &format!("{}/login/callback", h.url)) {
            let dir = tempfile::tempdir().unwrap();
            // The "browser": records the URL it is asked to open, for the test to visit.
            let opener = dir.path().join("open-url");
            std::fs::write(&opener, "#!/bin/sh\nprintf '%s' \"$1\" > \"$0.url\"\n").unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
            return Env {
                h,
                _op: op,
                op_issuer,
                dir,
            };
        }
    }
    panic!("oidc-provider did not start (see tests/peers/js/oidc_op.mjs)");
}

impl Env {
    fn url_file(&self) -> PathBuf {
        self.dir.path().join("open-url.url")
    }

    fn credentials_command(&self, role: &str) -> Vec<String> {
        [
            env!("CARGO_BIN_EXE_rolegate"),
            "credentials",
            "--server",
            &self.h.url,
            "--app",
            "aws",
            "--role",
            role,
            "--issuer",
            &self.op_issuer,
            "--client-id",
            PUBLIC_CLIENT_ID,
            "--scopes",
            "email,profile,groups",
            "--browser",
            &self.dir.path().join("open-url").display().to_string(),
            "--cache-dir",
            &self.dir.path().join("cache").display().to_string(),
            "--timeout-seconds",
            "60",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// `~/.aws/config` with one profile per role, each a `credential_process`.
    fn aws_config(&self) -> PathBuf {
        let mut text = String::new();
        for (profile, role) in [("reader", READER), ("admin", ADMIN)] {
            text.push_str(&format!(
                "[profile {profile}]\ncredential_process = {}\nregion = us-east-1\n\n",
                self.credentials_command(role).join(" ")
            ));
        }
        let path = self.dir.path().join("aws-config");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The unmodified AWS CLI as a person runs it: only a profile, no keys anywhere.
    fn aws(&self, profile: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(venv().join("bin/aws"));
        command
            .args([
                "sts",
                "get-caller-identity",
                "--query",
                "Arn",
                "--output",
                "text",
            ])
            .args(["--profile", profile])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_CONFIG_FILE", self.aws_config())
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.path().join("none"))
            .env("AWS_ENDPOINT_URL", moto())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .kill_on_drop(true);
        command
    }
}

/// Waits for the URL the "browser" was asked to open.
async fn opened_url(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(url) = std::fs::read_to_string(path)
            && !url.is_empty()
        {
            return url;
        }
        assert!(Instant::now() < deadline, "no browser was opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Signs in at the provider's page of `url` as `user`, following the redirects back to the
/// loopback listener of `rolegate credentials`; returns its final page.
async fn sign_in(url: &str, user: &str, password: &str) -> Answer {
    let mut browser = Agent::new();
    let callback = op_sign_in_to(&mut browser, url, user, password, "/callback?").await;
    browser.get(&callback).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_gets_the_mapped_role_through_rolegate_credentials() {
    let env = setup().await;
    let expected = |role: &str| format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/");

    // First use: the CLI runs rolegate credentials, which opens the browser and waits.
    let cli = env.aws("reader").output();
    let person = async {
        let url = opened_url(&env.url_file()).await;
        assert!(
            url.starts_with(&format!("{}/auth?", env.op_issuer)),
            "{url}"
        );
        assert!(url.contains("code_challenge_method=S256"), "{url}");
        assert!(url.contains("client_id=rolegate-cli"), "{url}");
        let page = sign_in(&url, "alice", "alice-pw").await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("Signed in"), "{}", page.body);
    };
    let (output, ()) = tokio::join!(cli, person);
    let output = output.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "aws: {stderr}");
    let arn = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(arn.starts_with(&expected("reader")), "{arn}");
    let sts_calls = env.h.metric("rolegate_sts_calls_total");
    assert_eq!(sts_calls, 1.0);

    // Again: the cached credentials answer; no browser, no new exchange.
    std::fs::remove_file(env.url_file()).unwrap();
    let output = env.aws("reader").output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), arn);
    assert_eq!(env.h.metric("rolegate_sts_calls_total"), sts_calls);
    assert!(!env.url_file().exists(), "no second sign-in");

    // Another role alice is mapped to: the cached id_token is exchanged again, no sign-in.
    let output = env.aws("admin").output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let admin = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(admin.starts_with(&expected("admin")), "{admin}");
    assert!(!env.url_file().exists(), "no second sign-in");

    // A role nobody mapped to alice: a clear refusal on stderr, nothing on stdout.
    let command = env.credentials_command(&format!("arn:aws:iam::{ACCOUNT}:role/other"));
    let output = std::process::Command::new(&command[0])
        .args(&command[1..])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rolegate: refused: 403"), "{stderr}");

    // What is cached is the owner's alone, and nothing printed carries a token.
    for entry in std::fs::read_dir(env.dir.path().join("cache")).unwrap() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = entry.unwrap().metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let id_token = std::fs::read_dir(env.dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jwt"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .unwrap();
    assert!(!stderr.contains(id_token.trim()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_with_no_role_is_told_so_and_nothing_is_cached() {
    let env = setup().await;
    let command = env.credentials_command(READER);
    let child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env("HOME", env.dir.path())
        .kill_on_drop(true)
        .output();
    let person = async {
        let url = opened_url(&env.url_file()).await;
        sign_in(&url, "bob", "bob-pw").await;
    };
    let (output, ()) = tokio::join!(child, person);
    let output = output.unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rolegate: refused: 403"), "{stderr}");
    assert_eq!(env.h.metric("rolegate_sts_calls_total"), 0.0);
    let cached: Vec<_> = std::fs::read_dir(env.dir.path().join("cache"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        cached
            .iter()
            .all(|n| !n.to_string_lossy().starts_with("credentials-")),
        "{cached:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_browser_the_device_flow_signs_in_on_another_device() {
    use tokio::io::AsyncBufReadExt as _;
    let env = setup().await;
    let mut command = env.credentials_command(READER);
    command.extend(["--flow".to_owned(), "device".to_owned()]);
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The person reads the code from the terminal...
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let (url, code) = line
        .strip_prefix("rolegate: sign in at ")
        .and_then(|rest| rest.split_once(" (code "))
        .unwrap_or_else(|| panic!("{line}"));
    let code = code.trim_end_matches(')');
    assert!(
        url.starts_with(&format!("{}/device?user_code=", env.op_issuer)),
        "{url}"
    );

    // ...and confirms it on another device: the provider's confirmation, then its sign-in page.
    let mut phone = Agent::new();
    let page = phone.get(url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let device = format!("{}/device", env.op_issuer);
    let xsrf = form_value(&page.body, "xsrf").unwrap();
    let page = phone
        .post(&device, &[("xsrf", &xsrf), ("user_code", code)])
        .await;
    assert!(
        page.body.contains(code),
        "the confirmation shows the code: {}",
        page.body
    );
    let xsrf = form_value(&page.body, "xsrf").unwrap();
    let answer = phone
        .post(
            &device,
            &[("xsrf", &xsrf), ("user_code", code), ("confirm", "yes")],
        )
        .await;
    let (interaction, page) = phone.follow(&location(&device, &answer), |_| false).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let answer = phone
        .post(
            &interaction,
            &[("login", "alice"), ("password", "alice-pw")],
        )
        .await;
    assert!((300..400).contains(&answer.status), "{}", answer.body);
    let (_, done) = phone
        .follow(&location(&interaction, &answer), |_| false)
        .await;
    assert_eq!(done.status, 200, "{}", done.body);

    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{:?}", lines.next_line().await);
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["Version"], 1);
    assert!(printed["AccessKeyId"].is_string() && printed["SessionToken"].is_string());
    assert!(!env.url_file().exists(), "no browser was asked for");
    assert_eq!(env.h.metric("rolegate_sts_calls_total"), 1.0);
}
