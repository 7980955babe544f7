//! Test harness: the real server on a loopback port, in front of a real moto server, with
//! resources written as CR YAML and service-account tokens signed by a real key.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod apiserver;

use rolegate::pacing::PacerSettings;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use rolegate::aws::sdk::SdkSts;
use rolegate::credentials::CredentialCache;
use rolegate::idp::KeyRing;
use rolegate::metrics::Metrics;
use rolegate::server::{AppState, Issuer, SystemClock, router};
use rolegate::store::SharedSnapshot;
use rolegate::store::files::load_dir;
use rolegate::tokens::TokenVerifier;

pub const ACCOUNT: &str = "123456789012";
pub const ISSUER: &str = "https://issuer.rolegate.test";
pub const ROLE: &str = "arn:aws:iam::123456789012:role/app-reader";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The peers venv, installed by `tests/peers/install.sh` (which `make test` runs).
pub fn venv() -> PathBuf {
    let peers =
        std::env::var_os("ROLEGATE_PEERS").map_or_else(|| repo().join(".peers"), PathBuf::from);
    let venv = peers.join("venv");
    assert!(
        venv.join("bin/python").exists(),
        "test peers are missing at {}: run `make test` (or tests/peers/install.sh)",
        venv.display()
    );
    venv
}

/// `node whoami.js` with the pinned AWS SDK for JavaScript v3 (installed by the peers script).
pub fn js_whoami() -> std::process::Command {
    let peers =
        std::env::var_os("ROLEGATE_PEERS").map_or_else(|| repo().join(".peers"), PathBuf::from);
    let script = peers.join("js/whoami.js");
    assert!(
        script.exists(),
        "the JavaScript SDK peer is missing at {}: run `make test`",
        script.display()
    );
    let mut command = std::process::Command::new("node");
    command.arg(script);
    command
}

/// Runs `command` as a pod would: an environment holding only PATH, HOME and the variables the
/// webhook injects (credentials at `credentials_url`, a fresh token for `team-a/app`), plus the
/// emulator's endpoint and a region.
pub async fn run_in_pod(
    h: &Harness,
    credentials_url: &str,
    mut command: std::process::Command,
) -> (bool, String, String) {
    let token = write(h.dir.path(), "token", &h.sa_token("team-a", "app"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", h.dir.path())
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{credentials_url}/v1/credentials"),
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

/// The aws-sdk-rust probe (`examples/sdk_probe.rs`): built by `cargo test --all-targets`, or here.
pub fn sdk_probe() -> std::process::Command {
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
        let (ok, _, err) =
            run(std::process::Command::new(cargo).args(["build", "--example", "sdk_probe"]));
        assert!(ok, "cannot build the sdk_probe example: {err}");
    }
    std::process::Command::new(probe)
}

/// The moto server `make test` starts (`ROLEGATE_TEST_MOTO`).
pub fn moto() -> String {
    std::env::var("ROLEGATE_TEST_MOTO")
        .expect("ROLEGATE_TEST_MOTO is not set: run the tests with `make test`, which starts moto")
}

/// A unique suffix for names shared in the one moto server.
pub fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 6];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// Resource YAML for a server: one SAMLApp `aws`, one IAMProvider `acct` allowing namespaces
/// labelled `team=a` and roles `app-*`, namespaces `team-a` (allowed) and `team-b` (not), a
/// kubernetes Connection `k8s`, and mappings exercising each tenant-guard rule.
pub fn resources(provider_name: &str, sign_response: bool) -> String {
    format!(
        r#"
apiVersion: rolegate.dev/v1alpha1
kind: SAMLApp
metadata: {{name: aws}}
spec:
  signResponse: {sign_response}
  mappings: {{"kubernetes.io/namespace": "https://rolegate.dev/namespace"}}
---
apiVersion: rolegate.dev/v1alpha1
kind: IAMProvider
metadata: {{name: acct}}
spec:
  samlApp: aws
  accountId: "{ACCOUNT}"
  providerName: {provider_name}
  allowedNamespaces: {{matchLabels: {{team: a}}}}
  allowedRoles: ["arn:aws:iam::{ACCOUNT}:role/app-*"]
---
apiVersion: v1
kind: Namespace
metadata: {{name: team-a, labels: {{team: a}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: team-b, labels: {{team: b}}}}
---
apiVersion: rolegate.dev/v1alpha1
kind: Connection
metadata: {{name: k8s}}
spec:
  kubernetes:
    issuer: {ISSUER}
    audiences: [rolegate]
    jwksUri: file:jwks.json
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: app-reader, namespace: team-a}}
spec:
  provider: acct
  roleArn: {ROLE}
  subjects: [{{kind: ServiceAccount, name: app}}, {{kind: ServiceAccount, name: multi}}]
  sessionTags: {{team: "{{namespace}}"}}
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: app-writer, namespace: team-a}}
spec:
  provider: acct
  roleArn: arn:aws:iam::{ACCOUNT}:role/app-writer
  subjects: [{{kind: ServiceAccount, name: multi}}]
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: admin, namespace: team-a}}
spec:
  provider: acct
  roleArn: arn:aws:iam::{ACCOUNT}:role/admin
  subjects: [{{kind: ServiceAccount, name: greedy}}]
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: borrowed, namespace: team-b}}
spec:
  provider: acct
  roleArn: {ROLE}
  subjects: [{{kind: ServiceAccount, name: app}}]
---
apiVersion: rolegate.dev/v1alpha1
kind: RoleMapping
metadata: {{name: elsewhere, namespace: team-a}}
spec:
  provider: nowhere
  roleArn: {ROLE}
  subjects: [{{kind: ServiceAccount, name: lost}}]
"#
    )
}

/// A running server and what it needs.
pub struct Harness {
    pub url: String,
    pub state: AppState,
    pub sa_key: String,
    pub dir: tempfile::TempDir,
    /// The serving task.
    pub server: tokio::task::JoinHandle<()>,
    tls_handle: axum_server::Handle<std::net::SocketAddr>,
    tls_updates: tokio::sync::watch::Sender<Option<rolegate::server::PemPair>>,
}

impl Harness {
    /// Starts the server over `yaml`, with a fresh service-account issuer key.
    pub async fn start(yaml: &str) -> Self {
        Self::start_with(yaml, |config| {
            TokenVerifier::new(config).with_refetch_interval(std::time::Duration::ZERO)
        })
        .await
    }

    /// Starts the server over `yaml` with the token verifier `verifier` builds from the config
    /// directory.
    pub async fn start_with(yaml: &str, verifier: impl FnOnce(PathBuf) -> TokenVerifier) -> Self {
        Self::start_full(yaml, verifier, None, moto(), PacerSettings::default()).await
    }

    /// Starts the server over `yaml` with STS at `sts_endpoint` instead of moto.
    pub async fn start_with_sts(yaml: &str, sts_endpoint: String) -> Self {
        Self::start_full(
            yaml,
            TokenVerifier::new,
            None,
            sts_endpoint,
            PacerSettings::default(),
        )
        .await
    }

    /// Starts the server over `yaml` with STS at `sts_endpoint`, paced with `pacing`.
    pub async fn start_with_sts_pacing(
        yaml: &str,
        sts_endpoint: String,
        pacing: PacerSettings,
    ) -> Self {
        Self::start_full(yaml, TokenVerifier::new, None, sts_endpoint, pacing).await
    }

    /// Starts the server over TLS with the PEM certificate chain and key.
    pub async fn start_tls(yaml: &str, cert_pem: &str, key_pem: &str) -> Self {
        let tls = Some((cert_pem.as_bytes().to_vec(), key_pem.as_bytes().to_vec()));
        Self::start_full(
            yaml,
            TokenVerifier::new,
            tls,
            moto(),
            PacerSettings::default(),
        )
        .await
    }

    async fn start_full(
        yaml: &str,
        verifier: impl FnOnce(PathBuf) -> TokenVerifier,
        tls: Option<(Vec<u8>, Vec<u8>)>,
        sts_endpoint: String,
        pacing: PacerSettings,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        let sa_key = rolegate::dev::generate_key().unwrap();
        let jwks = rolegate::dev::jwks(&sa_key).unwrap();
        std::fs::write(config.join("jwks.json"), jwks.to_string()).unwrap();
        std::fs::write(config.join("resources.yaml"), yaml).unwrap();
        let snapshot = load_dir(&config).unwrap();
        let keys = Arc::new(KeyRing::default());
        keys.replace(
            rolegate::standalone::load_keys(
                &snapshot,
                &dir.path().join("state"),
                "rolegate",
                jiff::Timestamp::now(),
            )
            .unwrap(),
        );
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", std_listener.local_addr().unwrap());
        let state = AppState {
            store: Arc::new(SharedSnapshot::new(snapshot)),
            keys,
            verifier: Arc::new(verifier(config)),
            issuer: Arc::new(Issuer {
                sts: Arc::new(SdkSts::new(Some(&sts_endpoint)).await),
                cache: CredentialCache::default(),
                cluster: Some("test-cluster".into()),
                pacer: rolegate::server::pacing::StsPacer::new(pacing),
            }),
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(SystemClock),
            public_url: url.clone(),
            ready: Arc::new(AtomicBool::new(true)),
            login: Arc::new(rolegate::login::LoginState::ephemeral("rolegate")),
            injection: Arc::new(rolegate::webhook::Injection::default()),
        };
        let app = router(state.clone());
        let tls_handle = axum_server::Handle::new();
        let (tls_updates, updates) = tokio::sync::watch::channel(None);
        let server = match tls {
            Some((cert, key)) => {
                let handle = tls_handle.clone();
                let config = axum_server::tls_rustls::RustlsConfig::from_pem(cert, key)
                    .await
                    .unwrap();
                tokio::spawn(rolegate::server::reload_tls(config.clone(), updates));
                tokio::spawn(async move {
                    rolegate::server::serve_tls_config(std_listener, app, config, handle)
                        .await
                        .unwrap()
                })
            }
            None => {
                std_listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                tokio::spawn(async move {
                    axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
                    )
                    .await
                    .unwrap()
                })
            }
        };
        Self {
            url,
            state,
            sa_key,
            dir,
            server,
            tls_handle,
            tls_updates,
        }
    }

    /// Serves a new certificate from the next TLS handshake on, as a renewed serving Secret
    /// does in a cluster.
    pub fn renew_tls(&self, cert_pem: &str, key_pem: &str) {
        self.tls_updates
            .send(Some((
                cert_pem.as_bytes().to_vec(),
                key_pem.as_bytes().to_vec(),
            )))
            .unwrap();
    }

    /// Takes the server down, closing its open connections too (TLS servers only); returns once
    /// the last connection is closed.
    pub async fn stop(&mut self) {
        self.tls_handle.shutdown();
        let _ = (&mut self.server).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.tls_handle.connection_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the server's connections did not close"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Rewrites the server's resources as a change of its config directory (or of the cluster)
    /// would: `edit` turns the current YAML into the new one.
    pub fn change_resources(&self, edit: impl FnOnce(String) -> String) {
        let config = self.dir.path().join("config");
        let path = config.join("resources.yaml");
        let yaml = edit(std::fs::read_to_string(&path).unwrap());
        std::fs::write(&path, yaml).unwrap();
        rolegate::server::replace_snapshot(
            &self.state.store,
            &self.state.issuer.cache,
            load_dir(&config).unwrap(),
        );
    }

    /// A token for service account `namespace/name`, audience `rolegate`, valid for an hour.
    pub fn sa_token(&self, namespace: &str, name: &str) -> String {
        self.token(
            &format!("system:serviceaccount:{namespace}:{name}"),
            &["rolegate"],
            3600,
        )
    }

    /// A token with the given subject, audiences and lifetime (negative: already expired).
    pub fn token(&self, subject: &str, audiences: &[&str], ttl: i64) -> String {
        self.pod_token(subject, audiences, ttl, "app-7d4b9c")
    }

    /// [`Harness::token`] bound to pod `pod`.
    pub fn pod_token(&self, subject: &str, audiences: &[&str], ttl: i64, pod: &str) -> String {
        let spec = rolegate::dev::TokenSpec {
            issuer: ISSUER.into(),
            subject: subject.into(),
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            ttl_seconds: ttl,
            pod: Some(pod.into()),
            kid: None,
        };
        rolegate::dev::token(&self.sa_key, &spec, jiff::Timestamp::now()).unwrap()
    }

    /// `GET /v1/credentials` with `authorization` as the raw header value.
    pub async fn credentials(
        &self,
        authorization: &str,
        role: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new().get(format!("{}/v1/credentials", self.url));
        if let Some(role) = role {
            request = request.query(&[("role", role)]);
        }
        let response = request
            .header("Authorization", authorization)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        )
    }

    /// `POST /delegation`, form-encoded.
    pub async fn delegation(&self, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/delegation", self.url))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        )
    }

    /// The sum of every sample of metric `name` (all label sets).
    pub fn metric(&self, name: &str) -> f64 {
        self.state
            .metrics
            .render()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The served metadata.
    pub async fn metadata(&self, app: &str) -> String {
        reqwest::get(format!("{}/samlp/metadata/{app}", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The first signing certificate of a metadata document, as PEM.
pub fn first_cert_pem(metadata: &str) -> String {
    let start = metadata.find("<ds:X509Certificate>").unwrap() + "<ds:X509Certificate>".len();
    let end = start + metadata[start..].find("</ds:X509Certificate>").unwrap();
    let b64 = &metadata[start..end];
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// Runs a command, returning (success, stdout, stderr).
pub fn run(command: &mut Command) -> (bool, String, String) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A free loopback port (bound and released; good enough for one test process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `rolegate serve` binary on a loopback port, killed when dropped.
pub struct Serve {
    child: std::process::Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// `http://ADDR`.
    pub url: String,
    /// Its log (JSON lines): `serve-PORT.log` beside the config folder.
    pub log: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// `rolegate serve --config CONFIG --state-dir STATE EXTRA...` with AWS at `aws`, once its
    /// `/readyz` answers 200.
    pub async fn start(config: &Path, state: &Path, aws: &str, extra: &[&str]) -> Self {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = config
            .parent()
            .unwrap()
            .join(format!("serve-{}.log", addr.port()));
        let child = Command::new(env!("CARGO_BIN_EXE_rolegate"))
            .args(["serve", "--listen", &addr.to_string()])
            .args(extra)
            .arg("--config")
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .env("AWS_ENDPOINT_URL", aws)
            .env("AWS_REGION", "us-east-1")
            .env("ROLEGATE_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let serve = Self {
            child,
            addr,
            url: format!("http://{addr}"),
            log,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", serve.url)).await
                && r.status() == 200
            {
                return serve;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "rolegate serve on {addr} did not become ready: {}",
                std::fs::read_to_string(&serve.log).unwrap_or_default()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
