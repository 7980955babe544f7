//! Which server replica the agent asks for a subject. Every replica has its own credential
//! cache, so an agent that lets the Service pick a replica per connection makes each replica
//! call STS for the same subject. Instead, agents hash the subject over the replicas' endpoints
//! (rendezvous, highest random weight): every token of a pod, before and after the kubelet
//! rotates it, goes to the same replica, which holds that pod's session; when that replica
//! fails, every agent picks the same next one.
//!
//! The endpoints come from a [`Resolve`] (the system resolver over a headless Service's name in
//! the product, a fixed list in tests), re-resolved periodically. The agent connects to an
//! endpoint's address but keeps the server URL's host name for TLS (SNI and certificate
//! verification) and the `Host` header: the serving certificate names the Service, not pods.

use std::net::SocketAddr;

use async_trait::async_trait;
use base64::Engine as _;

/// PURE: the key a request is routed by: what the server's session is for, read from the
/// token's payload (not verified: routing needs no trust, the server checks the token): its
/// subject and the pod it is bound to (the session carries the pod's name and UID as tags, so
/// each pod has its own), and the role asked for. Every token the kubelet rotates in for one pod
/// has the same key. A token whose payload cannot be read is routed by the token itself.
pub fn routing_key(token: &str, role: Option<&str>) -> Vec<u8> {
    let bearer = token.strip_prefix("Bearer ").unwrap_or(token);
    let claims = bearer
        .split('.')
        .nth(1)
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload.trim_end_matches('='))
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok());
    let session = claims.as_ref().and_then(|claims| {
        let subject = claims.get("sub")?.as_str()?;
        let pod = claims.get("kubernetes.io").and_then(|k| k.get("pod"));
        let part = |name: &str| {
            pod.and_then(|p| p.get(name))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        };
        Some(format!("{subject}\0{}\0{}", part("name"), part("uid")))
    });
    let mut key = session.unwrap_or_else(|| bearer.to_owned()).into_bytes();
    key.push(0);
    key.extend_from_slice(role.unwrap_or_default().as_bytes());
    key
}

/// PURE: the rendezvous weight of `endpoint` for `key`: the first 8 bytes of SHA-256 over both,
/// the same on every node (a process-seeded hasher would not be).
fn weight(key: &[u8], endpoint: &SocketAddr) -> u64 {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(key);
    context.update(&[0]);
    context.update(endpoint.to_string().as_bytes());
    let digest = context.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// PURE: `endpoints` in the order `key` tries them: highest weight first. Removing an endpoint
/// moves only the keys it was first for, each to its next; adding one takes keys only for
/// itself.
pub fn rendezvous_order(key: &[u8], endpoints: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut ranked: Vec<(u64, SocketAddr)> =
        endpoints.iter().map(|e| (weight(key, e), *e)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().map(|(_, e)| e).collect()
}

/// Where the server replicas are.
#[async_trait]
pub trait Resolve: Send + Sync + std::fmt::Debug {
    /// The replicas' addresses now.
    async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system resolver over `NAME:PORT`, a headless Service's name (one A/AAAA record per
/// ready pod).
#[derive(Debug, Clone)]
pub struct SystemResolver(pub String);

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(self.0.as_str()).await?.collect();
        addrs.sort();
        addrs.dedup();
        Ok(addrs)
    }
}

/// A fixed list of replicas.
#[derive(Debug, Clone)]
pub struct FixedEndpoints(pub Vec<SocketAddr>);

#[async_trait]
impl Resolve for FixedEndpoints {
    async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn endpoints(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 8443)))
            .collect()
    }

    #[test]
    fn the_order_is_a_permutation_and_the_same_for_any_listing_order() {
        let all = endpoints(3);
        let key = routing_key("x", None);
        let order = rendezvous_order(&key, &all);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, all);
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(rendezvous_order(&key, &reversed), order);
    }

    #[test]
    fn subjects_spread_over_the_replicas() {
        let all = endpoints(3);
        let mut first = std::collections::HashMap::new();
        for i in 0..3000 {
            let key = format!("system:serviceaccount:ns:sa{i}\0").into_bytes();
            *first.entry(rendezvous_order(&key, &all)[0]).or_insert(0) += 1;
        }
        assert_eq!(first.len(), 3);
        for count in first.values() {
            assert!((800..=1200).contains(count), "{first:?}");
        }
    }

    #[test]
    fn losing_a_replica_moves_only_its_subjects_to_their_next() {
        let all = endpoints(4);
        let gone = all[1];
        let rest: Vec<SocketAddr> = all.iter().copied().filter(|e| *e != gone).collect();
        for i in 0..500 {
            let key = format!("sa{i}").into_bytes();
            let before = rendezvous_order(&key, &all);
            let after = rendezvous_order(&key, &rest);
            let expected: Vec<SocketAddr> = before.into_iter().filter(|e| *e != gone).collect();
            assert_eq!(after, expected, "the relative order of the others holds");
        }
    }

    #[test]
    fn the_key_is_the_tokens_subject_its_pod_and_the_role() {
        let payload = |sub: &str, pod: &str, iat: u32| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
                serde_json::json!({"sub": sub, "iat": iat,
                    "kubernetes.io": {"pod": {"name": pod, "uid": format!("uid-{pod}")}}})
                .to_string(),
            )
        };
        // Two tokens of one pod (the kubelet rotated it): the same key.
        let a = format!(
            "h.{}.sig1",
            payload("system:serviceaccount:ns:app", "p1", 1)
        );
        let b = format!(
            "Bearer h.{}.sig2",
            payload("system:serviceaccount:ns:app", "p1", 2)
        );
        assert_eq!(routing_key(&a, None), routing_key(&b, None));
        // Another pod of the same service account has its own session, and key.
        let c = format!(
            "h.{}.sig3",
            payload("system:serviceaccount:ns:app", "p2", 1)
        );
        assert_ne!(routing_key(&a, None), routing_key(&c, None));
        assert_ne!(routing_key(&a, None), routing_key(&a, Some("arn:r")));
        let other = format!(
            "h.{}.sig",
            payload("system:serviceaccount:ns:other", "p1", 1)
        );
        assert_ne!(routing_key(&a, None), routing_key(&other, None));
        // Unreadable: the token itself.
        assert_eq!(routing_key("opaque", None), b"opaque\0".to_vec());
    }
}
