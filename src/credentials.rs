//! Credentials cached per session until shortly before they expire: the key is everything the
//! signed assertion carries (Connection, subject, app, NameID and every attribute), so two
//! callers share an entry only when they would have received the same session. Authorisation
//! runs before the cache, never inside the fetch. Concurrent misses for one key share a single
//! STS call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use moka::Expiry;
use moka::future::Cache;

use crate::aws::StsCredentials;
use crate::saml::Attribute;
use crate::saml::aws::{ChainTarget, RoleSession};

/// Cache key: everything that shapes the session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The Connection that vouched for the caller.
    pub connection: String,
    /// The token's issuer.
    pub issuer: String,
    /// `ServiceAccount` or `Person`.
    pub subject_kind: &'static str,
    /// The SAMLApp that signs.
    pub app: String,
    /// The assertion's NameID.
    pub name_id: String,
    /// The role session (role, provider, name, duration, tags, source identity).
    pub session: RoleSession,
    /// The role the session chains into, if any: the pair is cached as one session.
    pub chain: Option<ChainTarget>,
    /// The IAMProvider's STS region, if it names one.
    pub sts_region: Option<String>,
    /// Every other attribute the assertion carries (the SAMLApp's claim mappings).
    pub attributes: Vec<Attribute>,
}

/// A cached session and when it was obtained.
#[derive(Debug, Clone)]
pub struct CachedSession {
    /// The credentials.
    pub credentials: Arc<StsCredentials>,
    /// When STS issued them (wall clock).
    pub obtained: Timestamp,
}

/// How long before expiry a session stops being served: a quarter of its lifetime, at most
/// 15 minutes, so SDKs that refresh 5–15 minutes ahead always get fresh-enough credentials.
pub fn refresh_margin(obtained: Timestamp, expiration: Timestamp) -> Duration {
    let lifetime = expiration.duration_since(obtained).as_secs().max(0);
    Duration::from_secs(u64::try_from(lifetime / 4).unwrap_or(0).min(15 * 60))
}

/// How long a session may stay cached, seen at `now`.
pub fn time_to_live(session: &CachedSession, now: Timestamp) -> Duration {
    let expiration = session.credentials.expiration;
    let margin = refresh_margin(session.obtained, expiration);
    let remaining = expiration.duration_since(now).as_secs().max(0);
    Duration::from_secs(u64::try_from(remaining).unwrap_or(0)).saturating_sub(margin)
}

struct ExpireBeforeStsDoes;

impl Expiry<SessionKey, CachedSession> for ExpireBeforeStsDoes {
    fn expire_after_create(
        &self,
        _key: &SessionKey,
        value: &CachedSession,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(time_to_live(value, Timestamp::now()))
    }
}

/// The credential cache.
#[derive(Clone)]
pub struct CredentialCache {
    cache: Cache<SessionKey, CachedSession>,
}

impl std::fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl Default for CredentialCache {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl CredentialCache {
    /// A cache holding at most `capacity` sessions.
    pub fn new(capacity: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(ExpireBeforeStsDoes)
                .support_invalidation_closures()
                .build(),
        }
    }

    /// The cached session for `key`, or the one `fetch` obtains. Concurrent callers with the same
    /// key wait for one `fetch`. Errors are not cached. The flag says whether `fetch` ran here.
    ///
    /// # Errors
    /// The error of the shared `fetch`.
    pub async fn get_or_fetch<E, F>(
        &self,
        key: SessionKey,
        fetch: F,
    ) -> Result<(CachedSession, bool), Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<CachedSession, E>> + Send,
    {
        let fetched = AtomicBool::new(false);
        let session = self
            .cache
            .try_get_with(key, async {
                fetched.store(true, Ordering::Relaxed);
                fetch.await
            })
            .await?;
        Ok((session, fetched.load(Ordering::Relaxed)))
    }

    /// Forgets every cached session of `role_arn` (as the SAML role: a chained pair is
    /// forgotten by its first role). Lookups from now on miss.
    pub fn forget_role(&self, role_arn: &str) {
        let role_arn = role_arn.to_owned();
        if let Err(e) = self
            .cache
            .invalidate_entries_if(move |key, _| key.session.role_arn == role_arn)
        {
            // Only a cache built without invalidation closures refuses; fall back to forgetting
            // everything, which is never wrong.
            tracing::warn!(error = %e, "forgetting every cached session");
            self.cache.invalidate_all();
        }
    }

    /// Finishes the cache's pending housekeeping, so [`Self::len`] counts every insert.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Sessions currently held.
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies pending evictions, so [`Self::len`] is exact.
    pub async fn sync(&self) {
        self.cache.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_is_a_quarter_capped_at_fifteen_minutes() {
        let t0 = Timestamp::UNIX_EPOCH;
        let hour = t0 + jiff::SignedDuration::from_hours(1);
        assert_eq!(refresh_margin(t0, hour), Duration::from_secs(900));
        let quarter_hour = t0 + jiff::SignedDuration::from_secs(900);
        assert_eq!(refresh_margin(t0, quarter_hour), Duration::from_secs(225));
    }
}
