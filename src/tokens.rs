//! Identity tokens: JWTs verified against a Connection's JWKS (signature, `iss`, `aud`, `exp`,
//! `nbf`), or by TokenReview in a cluster. Unsigned and HMAC tokens are refused before any key is
//! looked at, and every check that needs no key (issuer trusted by a Connection, expiry,
//! audience) runs before any network I/O, so a forged token costs no fetch and no TokenReview.
//! Keys are cached and refetched when a token names an unknown `kid`; an `oidc` issuer's keys
//! are found through the login path's cached, hardened discovery. TokenReview calls are bounded
//! in number in flight, and rejected tokens are remembered briefly by hash.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use tokio::sync::{Mutex, Semaphore};

use crate::crd::{Connection, ConnectionKind};
use crate::login::oidc::ProviderClient;
use crate::store::Snapshot;
use crate::tokenreview::TokenReviewer;

/// Tokens longer than this are refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// By default, at most one JWKS refetch per URI in this interval, however many unknown `kid`s
/// arrive, so forged `kid`s cannot turn the server into a load generator against the issuer.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Clock skew tolerated on `nbf`.
const NBF_LEEWAY_SECONDS: i64 = 30;
/// At most this many TokenReview calls in flight by default; more wait for a slot.
pub const REVIEW_CONCURRENCY: usize = 16;
/// How long a token waits for a TokenReview slot before it is answered 503.
const REVIEW_SLOT_WAIT: Duration = Duration::from_secs(5);
/// How long a token the API server rejected is refused without asking again.
const REJECTED_TTL: Duration = Duration::from_secs(30);
/// Verified tokens remembered at most (by SHA-256), so a hit costs no parse and no signature.
const REMEMBERED_TOKENS: u64 = 100_000;
/// A remembered token unused this long is forgotten (it is also re-checked on every use).
const REMEMBERED_IDLE: Duration = Duration::from_secs(15 * 60);

/// Why a token is refused. Messages name the cause and never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token was presented.
    #[error("no token was presented")]
    Missing,
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token is {0} bytes; the limit is {MAX_TOKEN_BYTES}")]
    TooLarge(usize),
    /// Not a JWS compact serialisation with JSON header and claims.
    #[error("token is not a well-formed JWT: {0}")]
    Malformed(String),
    /// `alg: none`, HMAC, or an algorithm the key does not support.
    #[error("token algorithm {alg:?} is refused: {1}", alg = .0.chars().take(32).collect::<String>())]
    Algorithm(String, &'static str),
    /// No Connection of the right kind trusts this issuer.
    #[error("token issuer {0:?} is not trusted by any connection")]
    UntrustedIssuer(String),
    /// The issuer's JWKS has no key with this id, even after a refetch.
    #[error("token key id {kid:?} is not in the keys of connection {connection:?}")]
    UnknownKey {
        /// The `kid`.
        kid: String,
        /// The connection.
        connection: String,
    },
    /// The signature does not verify.
    #[error("token signature does not verify against connection {0:?}")]
    BadSignature(String),
    /// `exp` is past.
    #[error("token expired at {0}")]
    Expired(Timestamp),
    /// `nbf` is in the future.
    #[error("token is not valid before {0}")]
    NotYetValid(Timestamp),
    /// `aud` holds none of the connection's audiences.
    #[error("token audience {audience:?} is not accepted by connection {connection:?}")]
    WrongAudience {
        /// The token's audiences, comma-joined.
        audience: String,
        /// The connection.
        connection: String,
    },
    /// A required claim is missing or mistyped.
    #[error("token claim {0:?} is missing or not of the right type")]
    Claim(&'static str),
    /// The subject is not `system:serviceaccount:<ns>:<name>`.
    #[error("token subject {0:?} is not a service account")]
    NotServiceAccount(String),
    /// The Kubernetes API cannot be asked.
    #[error("the Kubernetes API cannot review the token: {0}")]
    ReviewUnavailable(String),
    /// TokenReview did not authenticate the token.
    #[error("token was not authenticated by the Kubernetes API: {0}")]
    Rejected(String),
    /// The connection's keys cannot be had.
    #[error("keys of connection {connection:?} cannot be fetched: {reason}")]
    Jwks {
        /// The connection.
        connection: String,
        /// Why.
        reason: String,
    },
}

impl TokenError {
    /// A short label for metrics.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::TooLarge(_) => "too_large",
            Self::Malformed(_) => "malformed",
            Self::Algorithm(..) => "algorithm",
            Self::UntrustedIssuer(_) => "issuer",
            Self::UnknownKey { .. } => "unknown_kid",
            Self::BadSignature(_) => "signature",
            Self::Expired(_) => "expired",
            Self::NotYetValid(_) => "not_yet_valid",
            Self::WrongAudience { .. } => "audience",
            Self::Claim(_) => "claim",
            Self::NotServiceAccount(_) => "subject",
            Self::Jwks { .. } => "jwks",
            Self::Rejected(_) => "token_review",
            Self::ReviewUnavailable(_) => "token_review_unavailable",
        }
    }
}

/// Which kind of Connection may vouch for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Only `kubernetes` Connections (the container-credentials path).
    ServiceAccounts,
    /// `kubernetes` and `oidc` Connections (delegation).
    Any,
}

/// A token whose signature and claims were verified.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The Connection that vouched for it.
    pub connection: String,
    /// Whether that Connection is of kind `kubernetes`.
    pub is_service_account: bool,
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `aud`.
    pub audiences: Vec<String>,
    /// Every claim.
    pub claims: Arc<serde_json::Map<String, serde_json::Value>>,
}

impl VerifiedToken {
    /// `(namespace, name)` of a service-account subject.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        let rest = self.subject.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains(':'))
            .then_some((namespace, name))
    }

    /// The pod a projected service-account token is bound to.
    pub fn pod(&self) -> Option<&str> {
        self.claims
            .get("kubernetes.io")
            .and_then(|k| k.get("pod"))
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
    }
}

#[derive(Debug)]
struct CachedKeys {
    keys: Option<Arc<JwkSet>>,
    fetched: Option<Instant>,
}

/// What a token says, before anything about it is checked: a pure function of its bytes.
#[derive(Debug, Clone)]
struct Parsed {
    alg: String,
    header: jsonwebtoken::Header,
    /// Shared with every [`VerifiedToken`] made from it: a hit clones a pointer.
    claims: Arc<serde_json::Map<String, serde_json::Value>>,
    issuer: String,
}

/// The proof a token passed the one check that is costly to repeat: its signature verified
/// under a key of this JWKS, fetched from this URI. It holds while the verifier still caches
/// this very set for the URI; a refetch (a key rotation) makes a new one.
#[derive(Debug, Clone)]
enum Evidence {
    Signature { uri: String, keys: Arc<JwkSet> },
}

/// A token that passed every check once. Only a success is ever remembered, and a hit re-runs
/// every check against the current snapshot and clock; only the parse and the signature are
/// skipped, and only with the same evidence.
#[derive(Debug)]
struct Remembered {
    parsed: Parsed,
    evidence: Evidence,
}

/// Where a JWKS comes from. Only a URI the operator configured may be a local file; one named
/// by a remote discovery document never is.
#[derive(Debug, Clone, Copy)]
enum KeySource<'a> {
    /// A standalone `kubernetes` Connection's `jwksUri`.
    Configured(&'a str),
    /// The `jwks_uri` of an `oidc` issuer's discovery document, already checked to be https
    /// (or http to loopback).
    Discovered(&'a str),
}

impl KeySource<'_> {
    const fn uri(&self) -> &str {
        match self {
            Self::Configured(uri) | Self::Discovered(uri) => uri,
        }
    }
}

/// Bounds TokenReview: slots in flight, and rejected tokens by SHA-256 (never the token).
struct ReviewGuard {
    slots: Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    slot_wait: Duration,
    rejected: moka::future::Cache<[u8; 32], String>,
}

impl ReviewGuard {
    fn new(slots: usize) -> Self {
        Self {
            slots: Semaphore::new(slots.max(1)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            slot_wait: REVIEW_SLOT_WAIT,
            rejected: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(REJECTED_TTL)
                .build(),
        }
    }
}

/// Counts a token waiting for a review slot, until it has one or gives up (or its request is
/// dropped).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ReviewGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewGuard")
            .field("free_slots", &self.slots.available_permits())
            .field("rejected", &self.rejected.entry_count())
            .finish_non_exhaustive()
    }
}

/// Verifies tokens, caching each JWKS by URI.
#[derive(Debug)]
pub struct TokenVerifier {
    provider: ProviderClient,
    base_dir: PathBuf,
    refetch_interval: Duration,
    cache: Mutex<HashMap<String, Arc<Mutex<CachedKeys>>>>,
    reviewer: Option<Arc<dyn TokenReviewer>>,
    guard: ReviewGuard,
    remembered: moka::sync::Cache<[u8; 32], Arc<Remembered>>,
}

fn remembered_cache() -> moka::sync::Cache<[u8; 32], Arc<Remembered>> {
    moka::sync::Cache::builder()
        .max_capacity(REMEMBERED_TOKENS)
        .time_to_idle(REMEMBERED_IDLE)
        .build()
}

/// Splits and decodes a JWS's header and claims, refusing unsigned and HMAC tokens.
fn parse(token: &str) -> Result<Parsed, TokenError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, claims_b64, _signature] = parts.as_slice() else {
        return Err(TokenError::Malformed(format!(
            "{} dot-separated parts, a JWS has 3",
            parts.len()
        )));
    };
    let raw_header = b64_json(header_b64)?;
    let alg = raw_header
        .get("alg")
        .and_then(|a| a.as_str())
        .ok_or_else(|| TokenError::Malformed("header has no alg".into()))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::Algorithm(
            alg.into(),
            "unsigned tokens are never accepted",
        ));
    }
    if alg.to_ascii_uppercase().starts_with("HS") {
        return Err(TokenError::Algorithm(
            alg.into(),
            "HMAC tokens are never accepted",
        ));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| TokenError::Algorithm(alg.into(), "not a supported JWS algorithm"))?;
    let claims = b64_json(claims_b64)?;
    let issuer = claims
        .get("iss")
        .and_then(|i| i.as_str())
        .ok_or(TokenError::Claim("iss"))?
        .to_owned();
    let serde_json::Value::Object(claims) = claims else {
        return Err(TokenError::Malformed("claims are not a JSON object".into()));
    };
    Ok(Parsed {
        alg: alg.to_owned(),
        header,
        claims: Arc::new(claims),
        issuer,
    })
}

fn sha256(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
    );
    out
}

fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// `exp` in the future and `nbf` not ahead of `now`. Checked on the claims before the signature
/// is (before any key is fetched or any review asked): these checks only ever refuse.
fn check_times(
    claims: &serde_json::Map<String, serde_json::Value>,
    now: Timestamp,
) -> Result<(), TokenError> {
    let exp = time_claim(claims, "exp")?.ok_or(TokenError::Claim("exp"))?;
    if exp <= now {
        return Err(TokenError::Expired(exp));
    }
    if let Some(nbf) = time_claim(claims, "nbf")?
        && nbf.as_second() > now.as_second() + NBF_LEEWAY_SECONDS
    {
        return Err(TokenError::NotYetValid(nbf));
    }
    Ok(())
}

fn b64_json(part: &str) -> Result<serde_json::Value, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| TokenError::Malformed(format!("bad base64url: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed(format!("bad JSON: {e}")))
}

fn audiences(claims: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn time_claim(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &'static str,
) -> Result<Option<Timestamp>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => {
            let secs = v
                .as_i64()
                .or_else(|| v.as_f64().map(|f| f as i64))
                .ok_or(TokenError::Claim(name))?;
            Timestamp::from_second(secs)
                .map(Some)
                .map_err(|_| TokenError::Claim(name))
        }
    }
}

struct Trusted<'a> {
    name: &'a str,
    audiences: Vec<String>,
    jwks_uri: Option<String>,
    oidc_issuer: Option<&'a str>,
    is_service_account: bool,
}

fn trusted<'a>(connection: &'a Connection, issuer: &str, accept: Accept) -> Option<Trusted<'a>> {
    let name = connection.metadata.name.as_deref().unwrap_or_default();
    match connection.spec.kind().ok()? {
        ConnectionKind::Kubernetes(k) if k.issuer.as_deref() == Some(issuer) => Some(Trusted {
            name,
            audiences: k.audiences.clone(),
            jwks_uri: k.jwks_uri.clone(),
            oidc_issuer: None,
            is_service_account: true,
        }),
        ConnectionKind::Oidc(o) if accept == Accept::Any && same_issuer(&o.issuer, issuer) => {
            Some(Trusted {
                name,
                audiences: std::iter::once(o.client_id.clone())
                    .chain(o.public_client_id.clone())
                    .collect(),
                jwks_uri: None,
                oidc_issuer: Some(o.issuer.as_str()),
                is_service_account: false,
            })
        }
        _ => None,
    }
}

impl TokenVerifier {
    /// A verifier resolving `file:` JWKS URIs against `base_dir`.
    pub fn new(base_dir: PathBuf) -> Self {
        Self {
            // A configured JWKS is read like a provider's: no redirect, a capped body.
            provider: ProviderClient::default(),
            base_dir,
            refetch_interval: REFETCH_INTERVAL,
            cache: Mutex::new(HashMap::new()),
            reviewer: None,
            guard: ReviewGuard::new(REVIEW_CONCURRENCY),
            remembered: remembered_cache(),
        }
    }

    /// Verified tokens remembered now (after pending evictions).
    pub fn remembered(&self) -> u64 {
        self.remembered.run_pending_tasks();
        self.remembered.entry_count()
    }

    /// At most `slots` TokenReview calls in flight; further tokens wait up to `wait` for one.
    #[must_use]
    pub fn with_review_slots(mut self, slots: usize, wait: Duration) -> Self {
        self.guard = ReviewGuard::new(slots);
        self.guard.slot_wait = wait;
        self
    }

    /// How many tokens wait for a TokenReview slot right now.
    pub fn reviews_waiting(&self) -> usize {
        self.guard
            .waiting
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Service-account tokens are checked by TokenReview (in a cluster) instead of by JWKS.
    #[must_use]
    pub fn with_token_review(mut self, reviewer: Arc<dyn TokenReviewer>) -> Self {
        self.reviewer = Some(reviewer);
        self
    }

    /// The least time between two fetches of one JWKS.
    #[must_use]
    pub const fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// Verifies `token` at `now` against the Connections of `snapshot`.
    ///
    /// # Errors
    /// The first check that fails, in the order: size, shape, algorithm, issuer, expiry,
    /// audience, then (with network I/O) key and signature or TokenReview, then subject.
    pub async fn verify(
        &self,
        token: &str,
        snapshot: &Snapshot,
        accept: Accept,
        now: Timestamp,
    ) -> Result<VerifiedToken, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge(token.len()));
        }
        let hash = sha256(token);
        let remembered = self.remembered.get(&hash);
        let fresh;
        let (parsed, evidence) = match &remembered {
            Some(r) => (&r.parsed, Some(&r.evidence)),
            None => {
                fresh = parse(token)?;
                (&fresh, None)
            }
        };
        let result = self
            .verify_parsed(token, parsed, evidence, snapshot, accept, now)
            .await;
        match result {
            Ok((verified, new_evidence)) => {
                if let Some(evidence) = new_evidence {
                    let parsed = parsed.clone();
                    self.remembered
                        .insert(hash, Arc::new(Remembered { parsed, evidence }));
                }
                Ok(verified)
            }
            Err(e) => {
                // What no longer verifies is forgotten: a refusal is never remembered as good.
                if remembered.is_some() {
                    self.remembered.invalidate(&hash);
                }
                Err(e)
            }
        }
    }

    /// Every check but the parse, skipping the signature (or the review) when `evidence` still
    /// holds. Returns new evidence to remember when the costly check ran.
    async fn verify_parsed(
        &self,
        token: &str,
        parsed: &Parsed,
        evidence: Option<&Evidence>,
        snapshot: &Snapshot,
        accept: Accept,
        now: Timestamp,
    ) -> Result<(VerifiedToken, Option<Evidence>), TokenError> {
        let Parsed {
            alg,
            header,
            claims,
            issuer,
        } = parsed;
        let alg = alg.as_str();
        if let Some(reviewer) = &self.reviewer {
            let oidc = accept == Accept::Any
                && snapshot.connections.values().any(|c| {
                    matches!(c.spec.kind(), Ok(ConnectionKind::Oidc(o)) if same_issuer(&o.issuer, issuer))
                });
            if !oidc {
                return self
                    .review(
                        reviewer.as_ref(),
                        token,
                        claims,
                        issuer.clone(),
                        snapshot,
                        now,
                    )
                    .await;
            }
        }
        let candidates: Vec<Trusted<'_>> = snapshot
            .connections
            .values()
            .filter_map(|c| trusted(c, issuer, accept))
            .collect();
        let token_audiences = audiences(claims);
        // Several connections may share an issuer; the one accepting the audience vouches.
        let connection = candidates
            .iter()
            .find(|c| c.audiences.iter().any(|a| token_audiences.contains(a)))
            .or_else(|| candidates.first())
            .ok_or_else(|| TokenError::UntrustedIssuer(issuer.chars().take(200).collect()))?;
        // Everything that needs no key is checked before any key is fetched.
        check_times(claims, now)?;
        if !connection
            .audiences
            .iter()
            .any(|a| token_audiences.contains(a))
        {
            return Err(TokenError::WrongAudience {
                audience: token_audiences.join(",").chars().take(200).collect(),
                connection: connection.name.to_owned(),
            });
        }

        let discovered;
        let source = match (&connection.jwks_uri, connection.oidc_issuer) {
            (Some(uri), _) => KeySource::Configured(uri),
            (None, Some(oidc)) => {
                discovered =
                    self.provider
                        .jwks_uri(oidc)
                        .await
                        .map_err(|reason| TokenError::Jwks {
                            connection: connection.name.to_owned(),
                            reason,
                        })?;
                KeySource::Discovered(&discovered)
            }
            (None, None) => {
                return Err(TokenError::Jwks {
                    connection: connection.name.to_owned(),
                    reason: "the connection has no jwksUri".into(),
                });
            }
        };
        let uri = source.uri();
        let proven = match evidence {
            Some(Evidence::Signature {
                uri: proven_uri,
                keys,
            }) if proven_uri == uri => self
                .current_keys(uri)
                .await
                .is_some_and(|current| Arc::ptr_eq(&current, keys)),
            _ => false,
        };
        let new_evidence = if proven {
            None
        } else {
            let (key, keys) = self
                .key_for(connection.name, source, header.kid.as_deref())
                .await?;
            let mut validation = Validation::new(header.alg);
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.validate_aud = false;
            validation.required_spec_claims.clear();
            jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(
                |e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                        TokenError::BadSignature(connection.name.to_owned())
                    }
                    jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                        TokenError::Algorithm(alg.into(), "it does not fit the key the token names")
                    }
                    other => TokenError::Malformed(format!("{other:?}")),
                },
            )?;
            Some(Evidence::Signature {
                uri: uri.to_owned(),
                keys,
            })
        };

        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .ok_or(TokenError::Claim("sub"))?
            .to_owned();
        let verified = VerifiedToken {
            connection: connection.name.to_owned(),
            is_service_account: connection.is_service_account,
            issuer: issuer.clone(),
            subject,
            audiences: token_audiences,
            claims: Arc::clone(claims),
        };
        if verified.is_service_account && verified.service_account().is_none() {
            return Err(TokenError::NotServiceAccount(
                verified.subject.chars().take(200).collect(),
            ));
        }
        Ok((verified, new_evidence))
    }

    /// The cluster path: the API server authenticates the token for the audiences of the
    /// `kubernetes` Connections. Only a token that could pass is sent: one whose issuer a
    /// `kubernetes` Connection trusts (its `issuer`, when set), unexpired, for one of their
    /// audiences, with a service-account subject, and not rejected in the last moments. At most
    /// a bounded number of reviews are in flight.
    async fn review(
        &self,
        reviewer: &dyn TokenReviewer,
        token: &str,
        claims: &serde_json::Map<String, serde_json::Value>,
        issuer: String,
        snapshot: &Snapshot,
        now: Timestamp,
    ) -> Result<(VerifiedToken, Option<Evidence>), TokenError> {
        let untrusted = || TokenError::UntrustedIssuer(issuer.chars().take(200).collect());
        // A Connection without `issuer` trusts whatever issuer the API server does.
        let connections: Vec<(&str, &Vec<String>)> = snapshot
            .connections
            .values()
            .filter_map(|c| match c.spec.kind() {
                Ok(ConnectionKind::Kubernetes(k))
                    if k.issuer.as_deref().is_none_or(|i| same_issuer(i, &issuer)) =>
                {
                    Some((c.metadata.name.as_deref().unwrap_or_default(), &k.audiences))
                }
                _ => None,
            })
            .collect();
        let token_audiences = audiences(claims);
        let mut audiences: Vec<String> = connections
            .iter()
            .flat_map(|(_, a)| a.iter().cloned())
            .collect();
        audiences.sort();
        audiences.dedup();
        if audiences.is_empty() {
            return Err(untrusted());
        }
        check_times(claims, now)?;
        if !audiences.iter().any(|a| token_audiences.contains(a)) {
            return Err(TokenError::WrongAudience {
                audience: token_audiences.join(",").chars().take(200).collect(),
                connection: connections
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .ok_or(TokenError::Claim("sub"))?;
        if !subject.starts_with("system:serviceaccount:") {
            return Err(TokenError::NotServiceAccount(
                subject.chars().take(200).collect(),
            ));
        }
        let hash = sha256(token);
        if let Some(reason) = self.guard.rejected.get(&hash).await {
            return Err(TokenError::Rejected(reason));
        }
        let reviewed = {
            let slot = {
                let _waiting = Waiting::new(&self.guard.waiting);
                tokio::time::timeout(self.guard.slot_wait, self.guard.slots.acquire()).await
            };
            let _slot = match slot {
                Ok(Ok(slot)) => slot,
                Ok(Err(_)) | Err(_) => {
                    return Err(TokenError::ReviewUnavailable(
                        "too many token reviews are in flight; try again".into(),
                    ));
                }
            };
            reviewer
                .review(token, &audiences)
                .await
                .map_err(TokenError::ReviewUnavailable)?
        };
        let reviewed = match reviewed {
            Ok(reviewed) => reviewed,
            Err(reason) => {
                self.guard.rejected.insert(hash, reason.clone()).await;
                return Err(TokenError::Rejected(reason));
            }
        };
        let (connection, _) = connections
            .iter()
            .find(|(_, a)| a.iter().any(|x| reviewed.audiences.contains(x)))
            .ok_or_else(|| TokenError::WrongAudience {
                audience: reviewed.audiences.join(","),
                connection: connections
                    .first()
                    .map(|(n, _)| (*n).to_owned())
                    .unwrap_or_default(),
            })?;
        let mut claims = serde_json::Map::new();
        if let Some(pod) = &reviewed.pod {
            claims.insert(
                "kubernetes.io".into(),
                serde_json::json!({"pod": {"name": pod}}),
            );
        }
        let verified = VerifiedToken {
            connection: (*connection).to_owned(),
            is_service_account: true,
            issuer,
            subject: reviewed.username,
            audiences: reviewed.audiences,
            claims: Arc::new(claims),
        };
        if verified.service_account().is_none() {
            return Err(TokenError::NotServiceAccount(
                verified.subject.chars().take(200).collect(),
            ));
        }
        // The reviewer keeps its own short cache of outcomes (`--token-review-ttl-seconds`);
        // nothing is remembered here.
        Ok((verified, None))
    }

    /// The JWKS cached for `uri` now, if any; never fetches.
    async fn current_keys(&self, uri: &str) -> Option<Arc<JwkSet>> {
        let entry = self.cache.lock().await.get(uri).cloned()?;
        let cached = entry.lock().await;
        cached.keys.clone()
    }

    async fn fetch(&self, source: KeySource<'_>) -> Result<JwkSet, String> {
        let uri = match source {
            KeySource::Discovered(uri) => {
                let bytes = self.provider.get(uri).await?;
                return serde_json::from_slice(&bytes).map_err(|e| format!("not a JWKS: {e}"));
            }
            KeySource::Configured(uri) => uri,
        };
        let bytes = if let Some(path) = uri.strip_prefix("file://") {
            tokio::fs::read(path)
                .await
                .map_err(|e| format!("{uri}: {e}"))?
        } else if let Some(relative) = uri.strip_prefix("file:") {
            let path = self.base_dir.join(relative);
            tokio::fs::read(&path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
        } else if uri.starts_with("https://") || uri.starts_with("http://") {
            self.provider.get(uri).await?
        } else {
            return Err(format!("{uri:?} is not an http(s):// or file: URI"));
        };
        serde_json::from_slice(&bytes).map_err(|e| format!("not a JWKS: {e}"))
    }

    async fn key_for(
        &self,
        connection: &str,
        source: KeySource<'_>,
        kid: Option<&str>,
    ) -> Result<(DecodingKey, Arc<JwkSet>), TokenError> {
        let uri = source.uri();
        let entry = {
            let mut cache = self.cache.lock().await;
            Arc::clone(cache.entry(uri.to_owned()).or_insert_with(|| {
                Arc::new(Mutex::new(CachedKeys {
                    keys: None,
                    fetched: None,
                }))
            }))
        };
        // One fetch at a time per URI; concurrent callers wait and reuse its result.
        let mut cached = entry.lock().await;
        let lookup = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let usable = |jwk: &jsonwebtoken::jwk::Jwk| {
            DecodingKey::from_jwk(jwk).map_err(|e| TokenError::Jwks {
                connection: connection.to_owned(),
                reason: format!("unusable key: {e}"),
            })
        };
        if let Some(keys) = cached.keys.clone()
            && let Some(jwk) = lookup(&keys)
        {
            return Ok((usable(&jwk)?, keys));
        }
        let may_fetch = cached
            .fetched
            .is_none_or(|t| t.elapsed() >= self.refetch_interval);
        if may_fetch {
            let fetched = self.fetch(source).await;
            cached.fetched = Some(Instant::now());
            match fetched {
                Ok(set) => cached.keys = Some(Arc::new(set)),
                Err(reason) if cached.keys.is_none() => {
                    cached.fetched = None;
                    return Err(TokenError::Jwks {
                        connection: connection.to_owned(),
                        reason,
                    });
                }
                Err(reason) => {
                    tracing::warn!(connection, %reason, "JWKS refetch failed; keeping the cached keys")
                }
            }
        }
        let unknown = || TokenError::UnknownKey {
            kid: kid.unwrap_or("(none)").chars().take(100).collect(),
            connection: connection.to_owned(),
        };
        let keys = cached.keys.clone().ok_or_else(unknown)?;
        let jwk = lookup(&keys).ok_or_else(unknown)?;
        Ok((usable(&jwk)?, keys))
    }
}
