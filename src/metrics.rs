//! Prometheus metrics shared by the server and registration.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric rolegate exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Assertions signed, by SAMLApp.
    pub assertions_signed: Family<Labels, Counter>,
    /// STS calls, by outcome.
    pub sts_calls: Family<Labels, Counter>,
    /// Credential requests served from the cache.
    pub cache_hits: Counter,
    /// Credential requests that needed STS.
    pub cache_misses: Counter,
    /// Sessions currently cached.
    pub cache_entries: Gauge,
    /// Tokens refused, by reason.
    pub token_rejections: Family<Labels, Counter>,
    /// HTTP responses, by route and status.
    pub http_responses: Family<Labels, Counter>,
    /// IAM registrations, by provider and action.
    pub registrations: Family<Labels, Counter>,
    /// Connections closed for being over a listener's cap, by listener.
    pub connections_refused: Family<Labels, Counter>,
    /// `http_responses{route="/v1/credentials",status="200"}`, looked up once.
    pub credentials_ok: Counter,
    /// STS call latency in seconds, by action (`AssumeRoleWithSAML`, `AssumeRole`).
    pub sts_duration: Family<Labels, Histogram>,
    /// First requests waiting for a paced STS slot.
    pub sts_queue_depth: Gauge,
    /// `Throttling` answers from STS.
    pub sts_throttles: Counter,
    /// First requests refused because no paced STS slot came within `--sts-max-wait`.
    pub sts_queue_refusals: Counter,
    /// Pod admissions, by outcome (`injected`, `already`, `skipped`).
    pub webhook_admissions: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `rolegate` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rolegate");
        let m = Self {
            assertions_signed: Family::default(),
            sts_calls: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_entries: Gauge::default(),
            token_rejections: Family::default(),
            http_responses: Family::default(),
            registrations: Family::default(),
            connections_refused: Family::default(),
            webhook_admissions: Family::default(),
            sts_queue_depth: Gauge::default(),
            sts_throttles: Counter::default(),
            sts_queue_refusals: Counter::default(),
            credentials_ok: Counter::default(),
            sts_duration: Family::new_with_constructor(|| {
                // 5 ms to about 20 s.
                Histogram::new(exponential_buckets(0.005, 2.0, 13))
            }),
            registry: Registry::default(),
        };
        registry.register(
            "assertions_signed",
            "SAML assertions signed",
            m.assertions_signed.clone(),
        );
        registry.register(
            "sts_calls",
            "STS calls (each attempt), by result",
            m.sts_calls.clone(),
        );
        registry.register(
            "credential_cache_hits",
            "Credential requests served from the cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "credential_cache_misses",
            "Credential requests that needed STS",
            m.cache_misses.clone(),
        );
        registry.register(
            "credential_cache_entries",
            "Sessions cached",
            m.cache_entries.clone(),
        );
        registry.register(
            "token_rejections",
            "Identity tokens refused",
            m.token_rejections.clone(),
        );
        registry.register("http_responses", "HTTP responses", m.http_responses.clone());
        registry.register(
            "iam_registrations",
            "IAM SAML provider registrations",
            m.registrations.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed because their listener was at its connection cap",
            m.connections_refused.clone(),
        );
        registry.register(
            "sts_call_duration_seconds",
            "STS call latency by action",
            m.sts_duration.clone(),
        );
        registry.register(
            "sts_queue_depth",
            "First requests waiting for a paced STS slot",
            m.sts_queue_depth.clone(),
        );
        registry.register(
            "sts_throttles",
            "Throttling answers from STS",
            m.sts_throttles.clone(),
        );
        registry.register(
            "sts_queue_refusals",
            "First requests refused (503) because no paced STS slot came within --sts-max-wait",
            m.sts_queue_refusals.clone(),
        );
        registry.register(
            "webhook_admissions",
            "Pod admission reviews answered, by outcome",
            m.webhook_admissions.clone(),
        );
        let credentials_ok = m
            .http_responses
            .get_or_create(&vec![
                ("route", "/v1/credentials".to_owned()),
                ("status", "200".to_owned()),
            ])
            .clone();
        Self {
            registry,
            credentials_ok,
            ..m
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
