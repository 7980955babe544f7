//! Command-line interface: one binary, one subcommand per role.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// rolegate: AWS credentials for Kubernetes workloads and people, through an in-cluster SAML
/// identity provider.
#[derive(Debug, Parser)]
#[command(name = "rolegate", version, about)]
pub struct Cli {
    /// Log filter, e.g. `info` or `rolegate=debug`.
    #[arg(long, global = true, env = "ROLEGATE_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as text, or as one JSON object each (for a log pipeline: every issuance is a
    /// line with the subject, role, session name and AccessKeyId, to join with CloudTrail).
    #[arg(long, global = true, env = "ROLEGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Standalone: the server and IAM registration, with resources read from CR YAML files.
    Serve(ServeArgs),
    /// The IdP, delegation and credentials server in a cluster, fed by watches.
    Server(ServerArgs),
    /// The node-local credentials endpoint SDKs in pods reach; forwards to the server over TLS.
    Agent(AgentArgs),
    /// The operator: reconcilers for SAMLApp, IAMProvider and RoleMapping, leader-elected.
    Controller(ControllerArgs),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD into a directory.
    Crds {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// AWS credentials for a person, as a `credential_process`: sign in at the OpenID provider,
    /// exchange the id_token at rolegate's /delegation, print `{"Version":1,...}`.
    Credentials(CredentialsArgs),
    /// Why does (or doesn't) a workload or person get a role: every RoleMapping that names the
    /// subject, its IAMProvider's guard and verdict, the session that would be sent and the
    /// trust policy the role needs. Exit status 0 when a role is granted, 1 when not, 2 on a
    /// usage or config error.
    Explain(ExplainArgs),
    /// Turn another product's configuration into rolegate resources.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Development helpers.
    #[command(subcommand)]
    Dev(DevCommand),
}

/// `rolegate import` sources.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Auth0's SAML2 Web App add-on settings (the JSON of the dashboard's Settings box,
    /// comments and all) as a SAMLApp, printed as YAML. Unknown keys and settings rolegate
    /// refuses fail, naming them; what is left out is said on stderr and in the YAML.
    #[command(name = "auth0-addon")]
    Auth0Addon {
        /// The settings JSON; `-` reads stdin.
        file: PathBuf,
        /// The SAMLApp's name.
        #[arg(long)]
        name: String,
    },
}

/// `rolegate explain` options.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["service_account", "user"])))]
pub struct ExplainArgs {
    /// The workload's namespace (with `--service-account`).
    #[arg(long, requires = "service_account")]
    pub namespace: Option<String>,
    /// The workload's service account (with `--namespace`).
    #[arg(long, requires = "namespace", conflicts_with_all = ["user", "groups", "connection"])]
    pub service_account: Option<String>,
    /// A person's user name, as RoleMappings' `User` subjects name it.
    #[arg(long)]
    pub user: Option<String>,
    /// One of the person's groups; repeat for several.
    #[arg(long = "group", requires = "user")]
    pub groups: Vec<String>,
    /// The Connection the person signs in through (default: the only non-Kubernetes one).
    #[arg(long, requires = "user")]
    pub connection: Option<String>,
    /// The role asked for (default: any, or the service account's `rolegate.dev/role`).
    #[arg(long)]
    pub role: Option<String>,
    /// The calling pod's name, for `{pod}` templates and the `kubernetes-pod-name` tag.
    #[arg(long)]
    pub pod: Option<String>,
    /// The installation's name, sent as the `rolegate-cluster` tag (as the server's
    /// `--cluster-name`).
    #[arg(long, env = "ROLEGATE_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Standalone: read resources from the CR YAML files in this directory instead of the
    /// cluster of the current kubeconfig.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The operator's namespace (cluster mode: the index watches its Secrets).
    #[arg(long, env = "POD_NAMESPACE", default_value = "rolegate")]
    pub operator_namespace: String,
    /// Seconds to wait for the cluster's resources to list (cluster mode).
    #[arg(long, default_value_t = 30)]
    pub timeout_seconds: u64,
    /// `text` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = ExplainOutput::Text)]
    pub output: ExplainOutput,
}

/// `rolegate explain --output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainOutput {
    /// Plain, stable text.
    Text,
    /// The explanation as one JSON object.
    Json,
}

/// `rolegate credentials` options.
#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// Base URL of rolegate server.
    #[arg(long, env = "ROLEGATE_SERVER")]
    pub server: String,
    /// The SAMLApp to sign in to (`target` at /delegation).
    #[arg(long)]
    pub app: String,
    /// The ARN of the role to assume.
    #[arg(long)]
    pub role: String,
    /// The OpenID provider's issuer URL (the oidc Connection's `issuer`).
    #[arg(long, env = "ROLEGATE_ISSUER")]
    pub issuer: String,
    /// The public OAuth client (the oidc Connection's `publicClientId`).
    #[arg(long, env = "ROLEGATE_CLIENT_ID")]
    pub client_id: String,
    /// Extra scopes; `openid` is always asked for.
    #[arg(long, value_delimiter = ',', default_value = "email,profile")]
    pub scopes: Vec<String>,
    /// `browser` (a loopback redirect) or `device` (a code to enter on another device).
    #[arg(long, value_enum, default_value = "browser")]
    pub flow: crate::laptop::Flow,
    /// A fixed loopback port for the redirect, when the provider wants an exact redirect URI.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Command that opens the sign-in URL (default: $BROWSER, then xdg-open or open).
    #[arg(long)]
    pub browser: Option<String>,
    /// Where credentials and the id_token are cached, owner-only (default:
    /// $XDG_CACHE_HOME/rolegate or ~/.cache/rolegate).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// PEM CA bundle to trust for the server.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Seconds to wait for the person to sign in.
    #[arg(long, default_value_t = 300)]
    pub timeout_seconds: u64,
}

impl CredentialsArgs {
    /// The options `rolegate credentials` runs with.
    pub fn options(&self) -> crate::laptop::Options {
        let cache_dir = self.cache_dir.clone().unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir)
                .join("rolegate")
        });
        crate::laptop::Options {
            server: self.server.clone(),
            app: self.app.clone(),
            role: self.role.clone(),
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            scopes: self.scopes.clone(),
            flow: self.flow,
            port: self.port,
            browser: self.browser.clone(),
            cache_dir,
            ca_file: self.ca_file.clone(),
            timeout: Duration::from_secs(self.timeout_seconds.max(1)),
        }
    }
}

/// `rolegate serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of CR YAML files (SAMLApp, IAMProvider, RoleMapping, Connection, v1/Namespace,
    /// v1/Secret).
    #[arg(long)]
    pub config: PathBuf,
    /// Where generated signing keys are kept between runs.
    #[arg(long, default_value = ".rolegate-state")]
    pub state_dir: PathBuf,
    /// Listen address: the workload endpoints, /metrics, health and the metadata, and the
    /// sign-in pages too unless `--public-listen` is given.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A second listener for what people and an Ingress reach: only the sign-in pages, the
    /// metadata and health.
    #[arg(long, env = "ROLEGATE_PUBLIC_LISTEN")]
    pub public_listen: Option<SocketAddr>,
    /// Base URL the server is reached at (metadata and login URLs); defaults to
    /// http://PUBLIC_LISTEN, else http://LISTEN.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Namespace that Secret references without a namespace point into.
    #[arg(long, default_value = "rolegate")]
    pub namespace: String,
    /// Proxies in front of the sign-in pages (CIDRs or addresses, comma-separated, such as the
    /// Ingress controller's pod network) whose `X-Forwarded-For` names the client that wrong
    /// passwords are counted against: the right-most hop that is not one of them. Without any,
    /// the TCP peer is the client.
    #[arg(long, env = "ROLEGATE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = crate::login::client::parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Seconds between checks of the config directory for changes.
    #[arg(long, default_value_t = 2)]
    pub poll_seconds: u64,
    /// Seconds between comparisons with IAM that repair drift.
    #[arg(long, default_value_t = 300)]
    pub resync_seconds: u64,
    /// The credentials URI the Pod webhook injects: where the node agent listens
    /// (`rolegate agent --listen`).
    #[arg(long, default_value = "http://169.254.170.23/v1/credentials")]
    pub credentials_uri: String,
    /// Limits of every listener.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// The installation's name: sent on every session as the `rolegate-cluster` tag (absent
    /// sends no such tag), and in the `rolegate.dev/owner` tag that marks the IAM SAML
    /// providers it registers and may update or delete (absent: `standalone`). Give each
    /// installation sharing an AWS account its own.
    #[arg(long, env = "ROLEGATE_CLUSTER_NAME", value_parser = cluster_name)]
    pub cluster_name: Option<String>,
    /// The AWS region whose regional STS endpoint (`https://sts.<region>.amazonaws.com`)
    /// assertions are exchanged at, for IAMProviders that name no `region`. Absent: the
    /// `AWS_REGION` of the environment, else `us-east-1`. The global endpoint is never used.
    #[arg(long, env = "ROLEGATE_STS_REGION")]
    pub sts_region: Option<String>,
    /// Once STS has answered `Throttling`, calls are paced per account and region (the rate
    /// cut on each throttle and recovering slowly). A first request waits at most this many
    /// seconds for its turn; past that it is answered 503 with `Retry-After`. Keep it below the
    /// node agent's 10 s request timeout.
    #[arg(long, env = "ROLEGATE_STS_MAX_WAIT_SECONDS", default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(0..=25))]
    pub sts_max_wait_seconds: u64,
}

/// A cluster name that fits the ownership tag.
fn cluster_name(value: &str) -> Result<String, String> {
    crate::registration::check_cluster_name(value).map(|()| value.to_owned())
}

impl ServeArgs {
    /// The options `serve` runs with.
    pub fn options(&self) -> crate::standalone::ServeOptions {
        crate::standalone::ServeOptions {
            cluster_name: self.cluster_name.clone(),
            sts_region: self.sts_region.clone(),
            sts_max_wait: Duration::from_secs(self.sts_max_wait_seconds),
            credentials_uri: self.credentials_uri.clone(),
            config: self.config.clone(),
            state_dir: self.state_dir.clone(),
            listen: self.listen,
            public_listen: self.public_listen,
            limits: self.limits.limits(crate::server::Limits::server()),
            public_url: self.public_url.clone(),
            namespace: self.namespace.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            poll: Duration::from_secs(self.poll_seconds.max(1)),
            resync: Duration::from_secs(self.resync_seconds.max(1)),
        }
    }
}

/// `rolegate server` options.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The operator's namespace, where the signing Secrets are.
    #[arg(long, env = "POD_NAMESPACE", default_value = "rolegate")]
    pub namespace: String,
    /// Listen address: the workload endpoints, /metrics, health and the metadata, and the
    /// sign-in pages too unless `--public-listen` is given.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// A second, plain-http listener for what an Ingress exposes: only the sign-in pages, the
    /// metadata and health.
    #[arg(long, env = "ROLEGATE_PUBLIC_LISTEN")]
    pub public_listen: Option<SocketAddr>,
    /// Base URL the server is reached at (metadata and login URLs).
    #[arg(long)]
    pub public_url: String,
    /// Proxies in front of the sign-in pages (CIDRs or addresses, comma-separated, such as the
    /// Ingress controller's pod network) whose `X-Forwarded-For` names the client that wrong
    /// passwords are counted against: the right-most hop that is not one of them. Without any,
    /// the TCP peer is the client.
    #[arg(long, env = "ROLEGATE_TRUSTED_PROXIES", value_delimiter = ',', value_parser = crate::login::client::parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Seconds a TokenReview outcome is reused.
    #[arg(long, default_value_t = 30)]
    pub token_review_ttl_seconds: u64,
    /// PEM certificate chain to serve TLS with (node agents verify it against the operator CA).
    #[arg(long, requires = "tls_key", conflicts_with = "tls_secret")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with this `kubernetes.io/tls` Secret of the operator namespace (the one the
    /// controller or cert-manager issues), reloading it when it is renewed.
    #[arg(long)]
    pub tls_secret: Option<String>,
    /// With TLS: serve TLS on this address and plain http (probes, an Ingress) on `--listen`.
    #[arg(long)]
    pub tls_listen: Option<SocketAddr>,
    /// The credentials URI the Pod webhook injects: where the node agent listens
    /// (`rolegate agent --listen`).
    #[arg(long, default_value = "http://169.254.170.23/v1/credentials")]
    pub credentials_uri: String,
    /// Limits of every listener.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// The cluster's name, sent on every session as the `rolegate-cluster` tag. Absent sends
    /// no such tag.
    #[arg(long, env = "ROLEGATE_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// The AWS region whose regional STS endpoint (`https://sts.<region>.amazonaws.com`)
    /// assertions are exchanged at, for IAMProviders that name no `region`. Absent: the
    /// `AWS_REGION` of the environment, else `us-east-1`. The global endpoint is never used.
    #[arg(long, env = "ROLEGATE_STS_REGION")]
    pub sts_region: Option<String>,
    /// Once STS has answered `Throttling`, calls are paced per account and region (the rate
    /// cut on each throttle and recovering slowly). A first request waits at most this many
    /// seconds for its turn; past that it is answered 503 with `Retry-After`. Keep it below the
    /// node agent's 10 s request timeout.
    #[arg(long, env = "ROLEGATE_STS_MAX_WAIT_SECONDS", default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(0..=25))]
    pub sts_max_wait_seconds: u64,
}

impl ServerArgs {
    /// The options the server runs with.
    pub fn options(&self) -> crate::cluster::ServerOptions {
        crate::cluster::ServerOptions {
            cluster_name: self.cluster_name.clone(),
            sts_region: self.sts_region.clone(),
            sts_max_wait: Duration::from_secs(self.sts_max_wait_seconds),
            credentials_uri: self.credentials_uri.clone(),
            namespace: self.namespace.clone(),
            listen: self.listen,
            public_listen: self.public_listen,
            limits: self.limits.limits(crate::server::Limits::server()),
            public_url: self.public_url.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            review_ttl: Duration::from_secs(self.token_review_ttl_seconds.max(1)),
            tls: match (&self.tls_secret, &self.tls_cert, &self.tls_key) {
                (Some(secret), _, _) => Some(crate::cluster::TlsSource::Secret(secret.clone())),
                (None, Some(cert), Some(key)) => {
                    Some(crate::cluster::TlsSource::Files(cert.clone(), key.clone()))
                }
                _ => None,
            },
            tls_listen: self.tls_listen,
        }
    }
}

/// `rolegate agent` options.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Where SDKs reach the agent: 169.254.170.23:80 (host network plus NET_ADMIN to add the
    /// address), [fd00:ec2::23]:80, or a loopback address. Repeat for several (dual stack).
    #[arg(long, default_value = "169.254.170.23:80", num_args = 1)]
    pub listen: Vec<SocketAddr>,
    /// Base URL of rolegate server.
    #[arg(long)]
    pub server: String,
    /// `NAME:PORT` of a headless Service over the server's pods (one address per ready
    /// replica, re-resolved every 30 s). Each subject then goes to one replica, the same from
    /// every node (rendezvous hashing), so one replica's cache serves it and STS is called
    /// once per session; when that replica fails, the next in the subject's order is asked,
    /// then --server. TLS still verifies --server's host name.
    #[arg(long, env = "ROLEGATE_SERVER_ENDPOINTS_DNS")]
    pub server_endpoints_dns: Option<String>,
    /// PEM CA that signed the server's certificate (the operator CA); required for https.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Worker threads. One keeps a node agent's footprint small and is measured in
    /// BENCHMARKS.md; more trade CPU for throughput on busy nodes.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// A name besides the listen addresses that a request's Host may carry (repeat for
    /// several). Requests for any other Host get 403: a web page cannot reach the agent through
    /// a name of its own that resolves to the agent's address (DNS rebinding).
    #[arg(long = "allowed-host", num_args = 1)]
    pub allowed_hosts: Vec<String>,
    /// Also serve `/metrics` and `/healthz` (never credentials) here, e.g. the node IP for
    /// Prometheus, which cannot reach the link-local address from another node.
    #[arg(long, env = "ROLEGATE_AGENT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Credential requests per second one client address may make, sustained; more get 429
    /// with Retry-After. 0 turns the limit off.
    #[arg(long, env = "ROLEGATE_AGENT_RATE_LIMIT", default_value_t = 100)]
    pub rate_limit_per_second: u32,
    /// Requests one client address may make at once above its sustained rate.
    #[arg(long, env = "ROLEGATE_AGENT_RATE_BURST", default_value_t = 200,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,
    /// Requests to the server in flight at once; further first requests wait for a slot.
    #[arg(long, default_value_t = crate::agent::DEFAULT_CONCURRENT_REFRESHES,
        value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_refreshes: u16,
    /// Once serving, remove this taint (`KEY:EFFECT`, as `kubectl taint` writes it) from the
    /// node named by --node-name: the node readiness signal, with the chart's
    /// `agent.startupTaint`.
    #[arg(long, value_parser = parse_taint, requires = "node_name")]
    pub remove_startup_taint: Option<(String, String)>,
    /// This agent's node (the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Limits of every listener.
    #[command(flatten)]
    pub limits: LimitArgs,
}

fn parse_taint(s: &str) -> Result<(String, String), String> {
    let (key, effect) = s.rsplit_once(':').ok_or_else(|| {
        format!("{s:?}: expected KEY:EFFECT, e.g. rolegate.dev/agent-not-ready:NoSchedule")
    })?;
    if key.is_empty() {
        return Err(format!("{s:?}: the taint key is empty"));
    }
    match effect {
        "NoSchedule" | "PreferNoSchedule" | "NoExecute" => Ok((key.to_owned(), effect.to_owned())),
        other => Err(format!(
            "{other:?} is not a taint effect (NoSchedule, PreferNoSchedule, NoExecute)"
        )),
    }
}

impl AgentArgs {
    /// The agent's options.
    pub fn options(self) -> crate::agent::AgentOptions {
        let rate_limit = std::num::NonZeroU32::new(self.rate_limit_per_second).map(|per_second| {
            crate::agent::RateLimit {
                per_second,
                burst: std::num::NonZeroU32::new(self.rate_limit_burst)
                    .unwrap_or(std::num::NonZeroU32::MIN),
            }
        });
        crate::agent::AgentOptions {
            listen: self.listen,
            server: self.server,
            server_endpoints_dns: self.server_endpoints_dns,
            ca_file: self.ca_file,
            limits: self.limits.limits(crate::server::Limits::agent()),
            allowed_hosts: self.allowed_hosts,
            metrics_listen: self.metrics_listen,
            rate_limit,
            max_concurrent_refreshes: usize::from(self.max_concurrent_refreshes),
            startup_taint: match (self.remove_startup_taint, self.node_name) {
                (Some((key, effect)), Some(node)) => {
                    Some(crate::agent::node::StartupTaint { node, key, effect })
                }
                _ => None,
            },
        }
    }
}

/// What each listener allows a client (`--listen`, `--public-listen`, `--tls-listen`, the
/// agent's).
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Seconds a client has to send a request's headers (and its first request, or its TLS
    /// handshake, after connecting); slower clients are disconnected.
    #[arg(long, env = "ROLEGATE_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout_seconds: u64,
    /// Seconds a request may take, its body included, before it is answered 408.
    #[arg(long, env = "ROLEGATE_REQUEST_TIMEOUT_SECONDS", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_seconds: u64,
    /// Connections each listener holds open at once; one more is closed as soon as it is
    /// accepted [default: 4096 for the server, 1024 for the agent].
    #[arg(long, env = "ROLEGATE_MAX_CONNECTIONS",
        value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: Option<u32>,
}

impl LimitArgs {
    /// The limits these flags set, over `defaults` for what they leave out.
    pub fn limits(&self, defaults: crate::server::Limits) -> crate::server::Limits {
        crate::server::Limits::new(
            Duration::from_secs(self.header_read_timeout_seconds),
            Duration::from_secs(self.request_timeout_seconds),
            self.max_connections.map_or(defaults.max_connections, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
        )
    }
}

/// `rolegate controller` options.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// The operator's namespace: the Lease, managed Secrets, and Secret references without one.
    #[arg(long, env = "POD_NAMESPACE", default_value = "rolegate")]
    pub namespace: String,
    /// Base URL of the rolegate server, for the metadata registered in IAM.
    #[arg(long)]
    pub public_url: String,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "rolegate-controller")]
    pub lease_name: String,
    /// Seconds between comparisons with IAM that repair drift.
    #[arg(long, default_value_t = 300)]
    pub resync_seconds: u64,
    /// Who issues the server's serving certificate: rolegate's own CA (`self-signed`), or
    /// cert-manager (`external`: only the CA bundle ConfigMap is published).
    #[arg(long, value_enum, default_value = "self-signed")]
    pub certificates: crate::controller::certs::CertMode,
    /// The server's Service, named by the serving certificate.
    #[arg(long, default_value = "rolegate-server")]
    pub server_service: String,
    /// The `kubernetes.io/tls` Secret the server serves with.
    #[arg(long, default_value = "rolegate-server-tls")]
    pub serving_secret: String,
    /// The Opaque Secret holding the operator CA (self-signed mode).
    #[arg(long, default_value = "rolegate-ca")]
    pub ca_secret: String,
    /// The ConfigMap publishing the CA bundle (`ca.crt`) for node agents.
    #[arg(long, default_value = "rolegate-ca")]
    pub ca_configmap: String,
    /// The MutatingWebhookConfiguration whose `caBundle` is kept; empty for none.
    #[arg(long, default_value = "rolegate")]
    pub webhook_configuration: String,
    /// The namespace whose Secrets only the controller may read: the operator CA, and the
    /// IAMProvider `credentials.secretRef` access keys (refused anywhere else). Default: the
    /// operator namespace with `-controller` appended.
    #[arg(long)]
    pub secrets_namespace: Option<String>,
    /// This cluster's name in the `rolegate.dev/owner` tag that marks the IAM SAML providers it
    /// owns. Default: the UID of the `kube-system` Namespace, which differs between clusters.
    #[arg(long, env = "ROLEGATE_CLUSTER_NAME", value_parser = cluster_name)]
    pub cluster_name: Option<String>,
    /// Seconds the leader Lease is held after each renewal; a standby takes it over after that.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds the leader keeps trying to renew before it stops acting and exits; shorter than
    /// the lease duration, so that it stops before a standby may take over.
    #[arg(long, default_value_t = 10)]
    pub renew_deadline_seconds: u64,
    /// Seconds between attempts to acquire or renew the Lease.
    #[arg(long, default_value_t = 2)]
    pub retry_period_seconds: u64,
}

impl ControllerArgs {
    /// The options the controller runs with.
    ///
    /// # Errors
    /// Leader-election timings that cannot work (the renew deadline must be shorter than the
    /// lease, the retry period shorter than the deadline), or a Secrets namespace that is the
    /// operator namespace.
    pub fn options(&self) -> Result<crate::controller::run::ControllerOptions, String> {
        let secrets_namespace = self
            .secrets_namespace
            .clone()
            .unwrap_or_else(|| format!("{}-controller", self.namespace));
        if secrets_namespace == self.namespace {
            return Err(format!(
                "--secrets-namespace must differ from the operator namespace {:?}: the server reads that one's Secrets",
                self.namespace
            ));
        }
        let leader = crate::controller::leader::LeaderTiming::new(
            Duration::from_secs(self.lease_duration_seconds),
            Duration::from_secs(self.renew_deadline_seconds),
            Duration::from_secs(self.retry_period_seconds),
        )?;
        Ok(crate::controller::run::ControllerOptions {
            secrets_namespace: secrets_namespace.clone(),
            cluster_name: self.cluster_name.clone(),
            leader,
            namespace: self.namespace.clone(),
            public_url: self.public_url.clone(),
            listen: self.listen,
            lease_name: self.lease_name.clone(),
            resync: Duration::from_secs(self.resync_seconds.max(1)),
            certificates: crate::controller::certs::CertOptions {
                mode: self.certificates,
                namespace: self.namespace.clone(),
                ca_namespace: secrets_namespace,
                ca_secret: self.ca_secret.clone(),
                ca_configmap: self.ca_configmap.clone(),
                serving_secret: self.serving_secret.clone(),
                service: self.server_service.clone(),
                webhook: Some(self.webhook_configuration.clone()).filter(|w| !w.is_empty()),
            },
        })
    }
}

/// `rolegate dev` helpers.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Mint a service-account-shaped RS256 JWT from a PEM private key.
    Token {
        /// PEM RSA private key.
        #[arg(long)]
        key: PathBuf,
        /// `iss`.
        #[arg(long)]
        issuer: String,
        /// `sub`, e.g. system:serviceaccount:demo:app.
        #[arg(long)]
        subject: String,
        /// `aud`; repeat for several.
        #[arg(long = "audience", default_value = "rolegate")]
        audiences: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
        /// Pod name for the `kubernetes.io` claim.
        #[arg(long)]
        pod: Option<String>,
        /// `kid`; defaults to a hash of the public key.
        #[arg(long)]
        kid: Option<String>,
        /// Write the token to this file, without a trailing newline, as the kubelet writes
        /// projected tokens.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the JWKS of a PEM private key's public half.
    Jwks {
        /// PEM RSA private key.
        #[arg(long)]
        key: PathBuf,
    },
    /// Generate a 2048-bit RSA private key (PKCS#8 PEM) on stdout.
    Keygen,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}
