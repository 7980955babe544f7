//! The node readiness signal: a node can be created with a startup taint
//! (`rolegate.dev/agent-not-ready:NoSchedule`) that keeps pods off it until its agent serves;
//! the agent then removes the taint from its own node.
//!
//! The patch is a JSON patch that tests the taint at its index before removing it, so a taint
//! list that changed in between (another controller's taint added or removed) fails the patch
//! instead of removing the wrong entry; the agent reads the node again and retries.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};

/// The taint key the chart puts on nodes when the readiness signal is on.
pub const DEFAULT_TAINT_KEY: &str = "rolegate.dev/agent-not-ready";

/// Which taint to remove from which node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupTaint {
    /// The agent's own node (the downward API's `spec.nodeName`).
    pub node: String,
    /// The taint's key.
    pub key: String,
    /// The taint's effect (`NoSchedule`, `NoExecute`, `PreferNoSchedule`).
    pub effect: String,
}

/// The JSON patch that removes `key:effect` from `node`, or `None` when the node does not
/// carry it.
pub fn removal_patch(node: &Node, key: &str, effect: &str) -> Option<json_patch::Patch> {
    let taints = node.spec.as_ref()?.taints.as_ref()?;
    let index = taints
        .iter()
        .position(|t| t.key == key && t.effect == effect)?;
    let value = serde_json::to_value(&taints[index]).ok()?;
    let path = format!("/spec/taints/{index}");
    serde_json::from_value(serde_json::json!([
        {"op": "test", "path": path, "value": value},
        {"op": "remove", "path": path},
    ]))
    .ok()
}

/// Removes the taint once: `Ok(true)` when it was removed, `Ok(false)` when the node did not
/// carry it.
///
/// # Errors
/// The node cannot be read or patched (including a patch whose test failed because the taints
/// changed meanwhile).
pub async fn remove_once(client: kube::Client, taint: &StartupTaint) -> Result<bool, kube::Error> {
    let nodes: Api<Node> = Api::all(client);
    let node = nodes.get(&taint.node).await?;
    let Some(patch) = removal_patch(&node, &taint.key, &taint.effect) else {
        return Ok(false);
    };
    nodes
        .patch(
            &taint.node,
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await?;
    Ok(true)
}

/// Removes the taint, retrying with backoff (1 s doubling to 30 s) until it is gone. Runs in
/// the background: the agent serves meanwhile.
pub async fn remove_startup_taint(taint: StartupTaint) {
    let client = match crate::cluster::kube_client("agent").await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, node = %taint.node,
                "cannot reach the API server to remove the startup taint; pods stay off this node");
            return;
        }
    };
    remove_with_retries(
        client,
        &taint,
        Duration::from_secs(1),
        Duration::from_secs(30),
    )
    .await;
}

/// [`remove_startup_taint`] with a given client and backoff (tests shorten it).
pub async fn remove_with_retries(
    client: kube::Client,
    taint: &StartupTaint,
    first: Duration,
    max: Duration,
) {
    let mut wait = first;
    loop {
        match remove_once(client.clone(), taint).await {
            Ok(true) => {
                tracing::info!(node = %taint.node, taint = %taint.key, "startup taint removed: the node takes pods");
                return;
            }
            Ok(false) => {
                tracing::info!(node = %taint.node, taint = %taint.key, "the node carries no startup taint");
                return;
            }
            Err(e) => {
                tracing::warn!(node = %taint.node, error = %e, retry_in = ?wait,
                    "cannot remove the startup taint yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(max);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeSpec, Taint};

    use super::*;

    fn node(taints: Vec<(&str, &str)>) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .into_iter()
                        .map(|(key, effect)| Taint {
                            key: key.into(),
                            effect: effect.into(),
                            ..Taint::default()
                        })
                        .collect(),
                ),
                ..NodeSpec::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn the_patch_tests_then_removes_the_taint_at_its_index() {
        let n = node(vec![
            ("node.kubernetes.io/not-ready", "NoSchedule"),
            (DEFAULT_TAINT_KEY, "NoSchedule"),
        ]);
        let patch = removal_patch(&n, DEFAULT_TAINT_KEY, "NoSchedule").unwrap();
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            serde_json::json!([
                {"op": "test", "path": "/spec/taints/1",
                 "value": {"key": DEFAULT_TAINT_KEY, "effect": "NoSchedule"}},
                {"op": "remove", "path": "/spec/taints/1"},
            ])
        );
    }

    #[test]
    fn no_patch_without_the_taint_or_with_another_effect() {
        assert!(removal_patch(&Node::default(), DEFAULT_TAINT_KEY, "NoSchedule").is_none());
        let n = node(vec![(DEFAULT_TAINT_KEY, "NoExecute")]);
        assert!(removal_patch(&n, DEFAULT_TAINT_KEY, "NoSchedule").is_none());
    }
}
