//! Pods admitted without their credentials. With `failurePolicy: Ignore`, a pod created while
//! the webhook was down starts without the injected variables, and its SDK silently falls back
//! to whatever else it finds. The controller (the leader only, so each pod is reported once)
//! watches Pods and, for each pod that
//! [`crate::webhook::missed`] flags, records a Warning Event on the pod
//! (`CredentialsNotInjected`) and counts `rolegate_webhook_pods_missed_total`, once per pod.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource as _, ResourceExt as _};

use prometheus_client::metrics::counter::Counter;

use crate::store::SharedSnapshot;

/// The Event's reason.
pub const REASON: &str = "CredentialsNotInjected";

/// Flags pods once each (by UID): remembered for a day, at most 100 000.
pub struct PodAudit {
    recorder: Recorder,
    missed: Counter,
    flagged: moka::sync::Cache<String, ()>,
}

impl std::fmt::Debug for PodAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodAudit")
            .field("flagged", &self.flagged.entry_count())
            .finish_non_exhaustive()
    }
}

impl PodAudit {
    /// An audit publishing Events through `client` and counting flagged pods in `missed`.
    pub fn new(client: Client, missed: Counter) -> Self {
        Self {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "rolegate-controller".into(),
                    instance: std::env::var("POD_NAME").ok(),
                },
            ),
            missed,
            flagged: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
        }
    }

    /// Checks one pod against `snapshot`; returns whether it was flagged now.
    pub async fn check(&self, pod: &Pod, snapshot: &crate::store::Snapshot) -> bool {
        let Some(uid) = pod.metadata.uid.clone() else {
            return false;
        };
        if self.flagged.contains_key(&uid) {
            return false;
        }
        let namespace = pod.namespace().unwrap_or_else(|| "default".into());
        let Some(reason) = crate::webhook::missed(pod, &namespace, snapshot) else {
            return false;
        };
        self.flagged.insert(uid, ());
        self.missed.inc();
        tracing::warn!(pod = %pod.name_any(), %namespace, %reason, "pod runs without its credentials");
        let event = Event {
            type_: EventType::Warning,
            reason: REASON.into(),
            note: Some(reason.chars().take(1000).collect()),
            action: "Audit".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &pod.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish the CredentialsNotInjected event");
        }
        true
    }

    /// Follows the resources rolegate's policy reads (as the server's index does) and watches
    /// every Pod once they have all listed, until the process stops.
    pub async fn run(self, client: Client, namespace: &str) {
        let index = crate::store::index::Index::start(&client, namespace);
        index.ready().await;
        let store = Arc::new(SharedSnapshot::new(index.snapshot()));
        {
            let store = Arc::clone(&store);
            tokio::spawn(crate::store::index::follow(
                index,
                Duration::from_millis(200),
                move |snapshot| store.replace(snapshot),
            ));
        }
        let pods = watcher(Api::<Pod>::all(client), watcher::Config::default())
            .default_backoff()
            .applied_objects();
        let mut pods = std::pin::pin!(pods);
        while let Some(next) = pods.next().await {
            match next {
                Ok(pod) => {
                    self.check(&pod, &store.current()).await;
                }
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            }
        }
    }
}
