//! `rolegate controller`: one kube-runtime Controller per kind, each reconcile as
//! gather → plan (pure) → apply → status, behind a Lease so that two replicas never both write.

pub mod certs;
pub mod connection;
pub mod iamprovider;
pub mod leader;
pub mod rolemapping;
pub mod run;
pub mod samlapp;
pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::aws::sdk::{IamAccess, SdkSamlProviders};
use crate::aws::{AwsError, SamlProviders};

/// Why a reconcile failed. The label is the metric's `reason` and the Event's reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// IAM refused or failed a call.
    #[error("IAM: {0}")]
    Aws(#[from] AwsError),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// Something the resource needs is not there yet.
    #[error("{0}")]
    Pending(String),
    /// The resource asks for something rolegate refuses to do; `reason` is the condition reason.
    #[error("{message}")]
    Refused {
        /// The condition and Event reason, e.g. `NotOwned`.
        reason: String,
        /// What was refused and why.
        message: String,
    },
}

impl From<crate::registration::RegistrationError> for Error {
    fn from(e: crate::registration::RegistrationError) -> Self {
        match e {
            crate::registration::RegistrationError::Aws(aws) => Self::Aws(aws),
            refused => Self::Refused {
                reason: refused.reason(),
                message: refused.to_string(),
            },
        }
    }
}

impl Error {
    /// A short label for metrics.
    pub fn label(&self) -> String {
        match self {
            Self::Kube(kube::Error::Api(status)) => format!("Kube{}", status.code),
            Self::Kube(_) => "KubeUnreachable".into(),
            Self::Aws(e) => e.code().to_owned(),
            Self::Finalizer(_) => "Finalizer".into(),
            Self::Pending(_) => "Pending".into(),
            Self::Refused { reason, .. } => reason.clone(),
        }
    }
}

/// Connects to IAM for one IAMProvider; tests and the real controller differ only here.
#[async_trait]
pub trait IamConnector: Send + Sync + std::fmt::Debug {
    /// A client for `access`.
    async fn connect(&self, access: &IamAccess) -> Arc<dyn SamlProviders>;
    /// Inline role policies (revocation) for `access`.
    async fn role_policies(&self, access: &IamAccess) -> Arc<dyn crate::aws::RolePolicies>;
}

/// The aws-sdk-rust connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct SdkConnector;

#[async_trait]
impl IamConnector for SdkConnector {
    async fn connect(&self, access: &IamAccess) -> Arc<dyn SamlProviders> {
        Arc::new(SdkSamlProviders::new(access).await)
    }

    async fn role_policies(&self, access: &IamAccess) -> Arc<dyn crate::aws::RolePolicies> {
        Arc::new(SdkSamlProviders::new(access).await.role_policies())
    }
}

/// Reconcile metrics: counts, errors by reason, and durations, per kind.
#[derive(Debug)]
pub struct ControllerMetrics {
    /// Reconciles, by kind.
    pub reconciles: Family<Vec<(&'static str, String)>, Counter>,
    /// Failed reconciles, by kind and reason.
    pub errors: Family<Vec<(&'static str, String)>, Counter>,
    /// Reconcile durations in seconds, by kind.
    pub durations: Family<Vec<(&'static str, String)>, Histogram>,
    /// Pods granted a role that run without the injected credentials.
    pub pods_missed: Counter,
    /// When each certificate in use expires (Unix seconds), by `certificate` (`ca`, `serving`).
    pub certificate_expiry: Family<Vec<(&'static str, String)>, Gauge>,
}

impl ControllerMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            durations: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
            pods_missed: Counter::default(),
            certificate_expiry: Family::default(),
        };
        registry.register("reconciles", "Reconciles by kind", m.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by kind and reason",
            m.errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile durations by kind",
            m.durations.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the operator CA and the serving certificate in use expire (Unix seconds)",
            m.certificate_expiry.clone(),
        );
        registry.register(
            "webhook_pods_missed",
            "Pods granted a role but running without the injected credentials (admitted while the webhook was down or skipped, or before their RoleMapping)",
            m.pods_missed.clone(),
        );
        m
    }
}

/// What every reconciler shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// IAM access.
    pub iam: Arc<dyn IamConnector>,
    /// The operator's namespace: managed Secrets, and Secret references without a namespace.
    /// The server reads its Secrets.
    pub namespace: String,
    /// The namespace whose Secrets only the controller reads: the operator CA and the
    /// IAMProvider access keys (`credentials.secretRef`).
    pub secrets_namespace: String,
    /// This cluster's name in the `rolegate.dev/owner` tag of the IAM SAML providers it owns.
    pub cluster_name: String,
    /// Base URL of the rolegate server, for metadata and login URLs.
    pub public_url: String,
    /// How often IAM is compared with the desired state even without changes.
    pub resync: Duration,
    /// Metrics.
    pub metrics: ControllerMetrics,
    /// The clock; tests pin it.
    pub clock: Arc<dyn crate::server::Clock>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("namespace", &self.namespace)
            .field("secrets_namespace", &self.secrets_namespace)
            .field("cluster_name", &self.cluster_name)
            .field("public_url", &self.public_url)
            .field("resync", &self.resync)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context; `registry` receives the reconcile metrics.
    pub fn new(
        client: Client,
        iam: Arc<dyn IamConnector>,
        namespace: String,
        public_url: String,
        registry: &mut Registry,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "rolegate-controller".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Self {
            client,
            recorder,
            iam,
            secrets_namespace: format!("{namespace}-controller"),
            cluster_name: "default".into(),
            namespace,
            public_url,
            resync: Duration::from_secs(300),
            metrics: ControllerMetrics::register(registry),
            clock: Arc::new(crate::server::SystemClock),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The same context with the controller-only Secrets in `namespace` (default: the operator
    /// namespace with `-controller` appended).
    #[must_use]
    pub fn with_secrets_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.secrets_namespace = namespace.into();
        self
    }

    /// The same context owning IAM SAML providers as cluster `name` (default `default`).
    #[must_use]
    pub fn with_cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = name.into();
        self
    }

    /// The same context reading `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn crate::server::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Publishes an Event about `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }

    /// The delay before retrying `key` after another failure: 5 s doubling to 5 min.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(5u64.saturating_mul(1 << (*n - 1).min(6))).min(Duration::from_secs(300))
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    /// Records a finished reconcile of `kind`.
    pub fn observe(
        &self,
        kind: &'static str,
        started: std::time::Instant,
        result: Result<(), &Error>,
    ) {
        let kind_label = vec![("kind", kind.to_owned())];
        self.metrics.reconciles.get_or_create(&kind_label).inc();
        self.metrics
            .durations
            .get_or_create(&kind_label)
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            self.metrics
                .errors
                .get_or_create(&vec![("kind", kind.to_owned()), ("reason", e.label())])
                .inc();
        }
    }
}

/// PURE: a condition of `type_`, keeping `lastTransitionTime` from `previous` when the status did
/// not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        last_transition_time: since,
        message: message.into(),
        observed_generation: generation,
        reason: reason.into(),
        status,
        type_: type_.into(),
    }
}

/// The condition of `type_`, if any.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}
