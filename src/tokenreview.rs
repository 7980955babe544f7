//! In a cluster, service-account tokens are checked by the API server's TokenReview, which is
//! authoritative: it knows bound pods and revoked tokens. Results are cached briefly, keyed by a
//! hash of the token, so a busy pod does not cost one review per request.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use moka::future::Cache;

/// What the API server says about a token it authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    /// `system:serviceaccount:<ns>:<name>`.
    pub username: String,
    /// The audiences the token is valid for, among those asked.
    pub audiences: Vec<String>,
    /// The pod a bound token belongs to.
    pub pod: Option<String>,
}

/// Reviews tokens.
#[async_trait]
pub trait TokenReviewer: Send + Sync + std::fmt::Debug {
    /// `Ok(Err(reason))` when the API server does not authenticate the token; `Err` when it
    /// cannot be asked.
    async fn review(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Result<Reviewed, String>, String>;
}

/// TokenReview through the Kubernetes API, with a short cache of outcomes.
#[derive(Clone)]
pub struct KubeTokenReviewer {
    client: Client,
    cache: Cache<(Vec<u8>, Vec<String>), Result<Reviewed, String>>,
}

impl std::fmt::Debug for KubeTokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTokenReviewer")
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl KubeTokenReviewer {
    /// A reviewer caching outcomes for `ttl`.
    pub fn new(client: Client, ttl: Duration) -> Self {
        Self {
            client,
            cache: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
        }
    }
}

#[async_trait]
impl TokenReviewer for KubeTokenReviewer {
    async fn review(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Result<Reviewed, String>, String> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
            .as_ref()
            .to_vec();
        let key = (digest, audiences.to_vec());
        let api = Api::<TokenReview>::all(self.client.clone());
        let review = TokenReview {
            metadata: ObjectMeta::default(),
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(audiences.to_vec()),
            },
            status: None,
        };
        self.cache
            .try_get_with(key, async move {
                let answer = api
                    .create(&PostParams::default(), &review)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = answer.status.unwrap_or_default();
                if status.authenticated != Some(true) {
                    return Ok(Err(status
                        .error
                        .unwrap_or_else(|| "the token is not authenticated".into())));
                }
                let user = status.user.unwrap_or_default();
                let pod = user
                    .extra
                    .as_ref()
                    .and_then(|e| e.get("authentication.kubernetes.io/pod-name"))
                    .and_then(|v| v.first().cloned());
                Ok(Ok(Reviewed {
                    username: user.username.unwrap_or_default(),
                    audiences: status.audiences.unwrap_or_default(),
                    pod,
                }))
            })
            .await
            .map_err(|e: std::sync::Arc<String>| (*e).clone())
    }
}
