//! Turning a verified token into credentials: decide the grant, sign an assertion, call STS,
//! cache. Shared by `/v1/credentials` and `/delegation`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;

use super::pacing::{PaceKey, StsPacer};
use super::{ApiError, AppState, record};
use crate::aws::{AssumeRequest, AwsError, ChainRequest, Sts, StsCredentials};
use crate::crd::ConnectionKind;
use crate::credentials::{CachedSession, CredentialCache, SessionKey};
use crate::login::flow::claim_strings;
use crate::policy::{self, RequestContext, RoleGrant, Subject, cors};
use crate::saml::{self, AUTHN_UNSPECIFIED, AppSettings, AssertionContent, Attribute, DocumentIds};
use crate::store::Snapshot;
use crate::tokens::{Accept, VerifiedToken};

/// Signs assertions and exchanges them with STS, through the credential cache.
#[derive(Debug)]
pub struct Issuer {
    /// STS.
    pub sts: Arc<dyn Sts>,
    /// Sessions by everything that shapes them.
    pub cache: CredentialCache,
    /// The cluster's name, sent as the `rolegate-cluster` session tag when set.
    pub cluster: Option<String>,
    /// STS calls paced per account and region, absorbing throttling.
    pub pacer: StsPacer,
}

/// Credentials for one grant.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    /// What was granted.
    pub grant: RoleGrant,
    /// What STS returned.
    pub credentials: Arc<StsCredentials>,
}

/// A random SAML ID: `_` and 32 hex digits.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // A failing system RNG leaves zeros; IDs are then still unique per Response pair only by
    // chance, so log it loudly.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        tracing::error!("system random number generator failed");
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("_{hex}")
}

struct Person {
    user: String,
    groups: Vec<String>,
}

/// The UID of the pod a projected service-account token is bound to.
fn pod_uid(token: &VerifiedToken) -> Option<&str> {
    token
        .claims
        .get("kubernetes.io")
        .and_then(|k| k.get("pod"))
        .and_then(|p| p.get("uid"))
        .and_then(|u| u.as_str())
}

fn person(token: &VerifiedToken, snapshot: &Snapshot) -> Result<Person, ApiError> {
    let connection = snapshot.connections.get(&token.connection);
    let claims = match connection.and_then(|c| c.spec.kind().ok()) {
        Some(ConnectionKind::Oidc(o)) => o.claims.clone(),
        _ => crate::crd::ClaimNames::default(),
    };
    let user = token
        .claims
        .get(&claims.subject)
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            ApiError::unauthorized(
                "invalid_token",
                format!("token has no {:?} claim", claims.subject),
            )
        })?
        .to_owned();
    let groups = token
        .claims
        .get(&claims.groups)
        .map(claim_strings)
        .unwrap_or_default();
    Ok(Person { user, groups })
}

impl Issuer {
    /// Credentials for the grant `token` selects. `target` limits grants to one SAMLApp; `role`
    /// and `principal` choose among several.
    ///
    /// # Errors
    /// 403 when nothing is granted (with the policy's reason), 400 when the choice is ambiguous,
    /// and STS failures.
    #[allow(clippy::too_many_arguments)]
    pub async fn for_token(
        &self,
        state: &AppState,
        snapshot: &Snapshot,
        token: &VerifiedToken,
        target: Option<&str>,
        role: Option<&str>,
        principal: Option<&str>,
        now: Timestamp,
    ) -> Result<IssuedSession, ApiError> {
        let person_info;
        let subject = if token.is_service_account {
            let (namespace, name) = token.service_account().ok_or_else(|| {
                ApiError::unauthorized("invalid_token", "token subject is not a service account")
            })?;
            Subject::ServiceAccount { namespace, name }
        } else {
            person_info = person(token, snapshot)?;
            Subject::Person {
                connection: &token.connection,
                user: &person_info.user,
                groups: &person_info.groups,
            }
        };
        let who = match subject {
            Subject::ServiceAccount { namespace, name } => {
                format!("service account {namespace}/{name}")
            }
            Subject::Person {
                user, connection, ..
            } => format!("user {user:?} of connection {connection:?}"),
        };
        let ctx = RequestContext {
            pod: token.pod(),
            pod_uid: pod_uid(token),
            cluster: self.cluster.as_deref(),
        };
        let decision = policy::decide(&subject, &ctx, snapshot);
        let mut grants = decision.grants;
        if let Some(target) = target {
            grants.retain(|g| g.app == target);
        }
        if grants.is_empty() {
            return Err(match decision.denials.first() {
                Some((mapping, denial)) => ApiError::forbidden(format!(
                    "RoleMapping {mapping} names {who} but grants nothing: {denial} ({})",
                    denial.reason()
                )),
                None => ApiError::forbidden(match target {
                    Some(t) => format!("no RoleMapping grants {who} a role through SAMLApp {t:?}"),
                    None => format!("no RoleMapping names {who}"),
                }),
            });
        }
        if let Some(role) = role {
            grants.retain(|g| g.session.role_arn == role);
        }
        if let Some(principal) = principal {
            grants.retain(|g| g.session.provider_arn == principal);
        }
        let grant = match grants.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(ApiError::forbidden(format!(
                    "role {:?} with provider {:?} is not granted to {who}",
                    role.unwrap_or("(any)"),
                    principal.unwrap_or("(any)")
                )));
            }
            several => {
                let roles: Vec<&str> = several
                    .iter()
                    .map(|g| g.session.role_arn.as_str())
                    .collect();
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!(
                        "{who} may assume {} roles ({}); choose one with role",
                        roles.len(),
                        roles.join(", ")
                    ),
                ));
            }
        };

        // Everything below shapes the assertion, so it is all in the key; nothing that decides
        // whether the caller may have it runs after this point.
        let app = snapshot.apps.get(&grant.app).ok_or_else(|| {
            ApiError::unavailable(format!(
                "SAMLApp {:?} named by IAMProvider {:?} does not exist",
                grant.app, grant.provider
            ))
        })?;
        let settings =
            AppSettings::from_app(app).map_err(|e| ApiError::unavailable(e.to_string()))?;
        let (name_id, attributes) = assertion_content(app, snapshot, &subject, token);
        let key = SessionKey {
            connection: token.connection.clone(),
            issuer: token.issuer.clone(),
            subject_kind: subject.kind(),
            app: grant.app.clone(),
            name_id,
            session: grant.session.clone(),
            chain: grant.chain.clone(),
            sts_region: grant.sts_region.clone(),
            attributes,
        };
        let fetch = self.sign_and_assume(state, &settings, &subject, &key, now);
        let (session, fetched) = self
            .cache
            .get_or_fetch(key.clone(), fetch)
            .await
            .map_err(|e| (*e).clone())?;
        if fetched {
            state.metrics.cache_misses.inc();
        } else {
            state.metrics.cache_hits.inc();
        }
        Ok(IssuedSession {
            grant,
            credentials: session.credentials,
        })
    }

    async fn sign_and_assume(
        &self,
        state: &AppState,
        settings: &AppSettings,
        subject: &Subject<'_>,
        key: &SessionKey,
        now: Timestamp,
    ) -> Result<CachedSession, ApiError> {
        let keys = state.keys.get(&key.app).ok_or_else(|| {
            ApiError::unavailable(format!("SAMLApp {:?} has no signing key yet", key.app))
        })?;
        let mut attributes = key.session.attributes();
        attributes.extend(key.attributes.iter().cloned());
        let ids = DocumentIds {
            response: random_id(),
            assertion: random_id(),
        };
        let content = AssertionContent {
            name_id: &key.name_id,
            attributes: &attributes,
            authn_context: AUTHN_UNSPECIFIED,
        };
        let signed = saml::build_response(settings, &content, &ids, now, keys.active.as_ref())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        state
            .metrics
            .assertions_signed
            .get_or_create(&vec![("app", key.app.clone())])
            .inc();
        let request = AssumeRequest {
            role_arn: key.session.role_arn.clone(),
            principal_arn: key.session.provider_arn.clone(),
            saml_assertion: signed.to_base64(),
            duration_seconds: key.session.duration_seconds,
            region: key.sts_region.clone(),
        };
        let pace = PaceKey::new(&request.role_arn, request.region.as_deref());
        let mut credentials = self
            .pacer
            .call(&state.metrics, &pace, || {
                let request = request.clone();
                async move {
                    let started = std::time::Instant::now();
                    let result = self.sts.assume_role_with_saml(request).await;
                    count_sts_call(state, "AssumeRoleWithSAML", started, &result);
                    result
                }
            })
            .await?;
        if let Some(chain) = &key.chain {
            let request = ChainRequest {
                role_arn: chain.role_arn.clone(),
                session_name: key.session.session_name.clone(),
                external_id: chain.external_id.clone(),
                duration_seconds: chain.duration_seconds,
                region: key.sts_region.clone(),
            };
            let pace = PaceKey::new(&request.role_arn, request.region.as_deref());
            let source = &credentials;
            let result = self
                .pacer
                .call(&state.metrics, &pace, || {
                    let request = request.clone();
                    async move {
                        let started = std::time::Instant::now();
                        let result = self.sts.assume_role(source, request).await;
                        count_sts_call(state, "AssumeRole", started, &result);
                        result
                    }
                })
                .await;
            credentials = result.map_err(|e| chain_error(&chain.role_arn, &e))?;
        }
        tracing::info!(
            subject = %subject.name_id(),
            connection = %key.connection,
            role = %key.session.role_arn,
            chained_into = key.chain.as_ref().map_or("", |c| c.role_arn.as_str()),
            session = %key.session.session_name,
            access_key_id = %credentials.access_key_id,
            expiration = %credentials.expiration,
            "issued credentials"
        );
        Ok(CachedSession {
            credentials: Arc::new(credentials),
            obtained: now,
        })
    }
}

fn count_sts_call(
    state: &AppState,
    action: &'static str,
    started: std::time::Instant,
    result: &Result<StsCredentials, AwsError>,
) {
    let outcome = match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.code().to_owned(),
    };
    state
        .metrics
        .sts_calls
        .get_or_create(&vec![("result", outcome)])
        .inc();
    state
        .metrics
        .sts_duration
        .get_or_create(&vec![("action", action.to_owned())])
        .observe(started.elapsed().as_secs_f64());
}

/// A failed chained `AssumeRole`, named as such so the caller knows which hop failed.
fn chain_error(target: &str, e: &AwsError) -> ApiError {
    match e {
        AwsError::Service { .. } => {
            ApiError::forbidden(format!("sts:AssumeRole into {target} was refused: {e}"))
        }
        other => ApiError::from(other.clone()),
    }
}

/// The NameID and the non-AWS attributes of `subject`'s assertion: a workload's NameID is its
/// service account and its attributes the claims the app's `mappings` name; a person's are
/// their profile under the app's Auth0 settings ([`saml::profile`]). Never AWS's own
/// attributes, which only the policy sets.
fn assertion_content(
    app: &crate::crd::SAMLApp,
    snapshot: &Snapshot,
    subject: &Subject<'_>,
    token: &VerifiedToken,
) -> (String, Vec<Attribute>) {
    match subject {
        Subject::ServiceAccount { .. } => {
            let attributes = app
                .spec
                .mappings
                .iter()
                .filter_map(|(claim, attribute)| {
                    let values = token.claims.get(claim).map(claim_strings)?;
                    (!values.is_empty()).then(|| Attribute::strings(attribute.clone(), values))
                })
                .collect();
            (subject.name_id(), attributes)
        }
        Subject::Person { .. } => {
            let user_id = subject.name_id();
            let profile = person_profile(snapshot, token, &user_id);
            let attributes = saml::profile::attributes(&app.spec, &profile);
            let name_id = saml::profile::name_id(&app.spec, &profile, &attributes);
            (name_id, attributes)
        }
    }
}

/// The profile of the person `token` names, as `user_id`.
fn person_profile<'a>(
    snapshot: &Snapshot,
    token: &'a VerifiedToken,
    user_id: &'a str,
) -> saml::profile::Profile<'a> {
    saml::profile::Profile {
        user_id,
        connection: &token.connection,
        provider: connection_provider(snapshot, &token.connection),
        claims: &token.claims,
    }
}

/// The kind of Connection `name`, as Auth0 names an identity's `provider`.
pub(crate) fn connection_provider(snapshot: &Snapshot, name: &str) -> &'static str {
    match snapshot.connections.get(name).map(|c| c.spec.kind()) {
        Some(Ok(ConnectionKind::Oidc(_))) => "oidc",
        Some(Ok(ConnectionKind::Kubernetes(_))) => "kubernetes",
        Some(Ok(ConnectionKind::Static(_))) => "static",
        _ => "unknown",
    }
}

/// An Auth0-style delegation request, form- or JSON-encoded.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DelegationRequest {
    grant_type: Option<String>,
    id_token: Option<String>,
    target: Option<String>,
    client_id: Option<String>,
    role: Option<String>,
    principal: Option<String>,
    api_type: Option<String>,
    #[allow(dead_code)]
    scope: Option<String>,
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub(crate) fn parse_delegation(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<DelegationRequest, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        // serde_json's own message quotes the offending value, which may be the token itself.
        serde_json::from_slice(body).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Data => "not a JSON object of string fields",
                _ => "not valid JSON",
            };
            ApiError::bad_request(
                "invalid_request",
                format!("body is {what} (line {}, column {})", e.line(), e.column()),
            )
        })
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        serde_urlencoded::from_bytes(body).map_err(|e| {
            ApiError::bad_request("invalid_request", format!("body is not a valid form: {e}"))
        })
    } else {
        Err(ApiError::bad_request(
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded or application/json",
        ))
    }
}

fn required<'a>(value: Option<&'a str>, name: &str) -> Result<&'a str, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request("invalid_request", format!("{name} is required")))
}

/// `POST /delegation`: Auth0-compatible exchange of an identity token for AWS credentials.
pub async fn delegation(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let mut cors = None;
    let result = match axum::body::to_bytes(body, super::MAX_BODY_BYTES).await {
        Ok(body) => delegate(&state, &headers, &body, &mut cors).await,
        Err(_) => Err(ApiError {
            status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            error: "invalid_request",
            description: format!(
                "request body is larger than {} bytes",
                super::MAX_BODY_BYTES
            ),
            retry_after: None,
        }),
    };
    record(&state, "/delegation", &result);
    with_cors(result.into_response(), cors.as_deref())
}

/// `OPTIONS /delegation`: a browser's preflight, answered when some SAMLApp allows the origin
/// (204 with the CORS headers); 403 without them otherwise.
pub async fn delegation_preflight(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    let snapshot = state.store.current();
    let decision = cors::for_preflight(
        header_str(header::ORIGIN),
        header_str(header::ACCESS_CONTROL_REQUEST_METHOD),
        snapshot
            .apps
            .values()
            .map(|a| a.spec.allowed_origins.as_slice()),
    );
    match decision {
        cors::Decision::Allowed(origin) => {
            let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
            for (name, value) in cors::preflight_headers(&origin) {
                if let Ok(value) = header::HeaderValue::from_str(&value) {
                    response.headers_mut().insert(name, value);
                }
            }
            with_cors(response, Some(&origin))
        }
        cors::Decision::NoOrigin => ApiError::bad_request(
            "invalid_request",
            "OPTIONS /delegation is a CORS preflight and needs an Origin",
        )
        .into_response(),
        cors::Decision::Refused(reason) => ApiError::forbidden(reason).into_response(),
    }
}

/// `response` with `Access-Control-Allow-Origin: origin` and `Vary: Origin` when `origin` is
/// allowed; never `Access-Control-Allow-Credentials`.
fn with_cors(mut response: Response, origin: Option<&str>) -> Response {
    if let Some(value) = origin.and_then(|o| header::HeaderValue::from_str(o).ok()) {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.append(header::VARY, header::HeaderValue::from_static("Origin"));
    }
    response
}

async fn delegate(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    cors_origin: &mut Option<String>,
) -> Result<Response, ApiError> {
    let request = parse_delegation(headers, body)?;
    let grant_type = required(request.grant_type.as_deref(), "grant_type")?;
    if grant_type != JWT_BEARER {
        return Err(ApiError::bad_request(
            "unsupported_grant_type",
            format!("grant_type must be {JWT_BEARER}"),
        ));
    }
    // auth0.js 7 sends `api_type=` (empty) when the caller names no `api`: the same as none.
    if let Some(api_type) = request
        .api_type
        .as_deref()
        .filter(|a| !a.is_empty() && *a != "aws")
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("api_type {api_type:?} is not supported; use aws"),
        ));
    }
    let id_token = required(request.id_token.as_deref(), "id_token")?;
    let target = required(request.target.as_deref(), "target")?;
    let client_id = required(request.client_id.as_deref(), "client_id")?;
    let now = state.clock.now();
    let snapshot = state.store.current();
    // A browser's request is refused before anything is verified, signed or sent to STS.
    let allowed = snapshot
        .apps
        .get(target)
        .map_or(&[][..], |a| a.spec.allowed_origins.as_slice());
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match cors::for_request(origin.as_deref(), target, allowed) {
        cors::Decision::NoOrigin => {}
        cors::Decision::Allowed(origin) => *cors_origin = Some(origin),
        cors::Decision::Refused(reason) => return Err(ApiError::forbidden(reason)),
    }
    let token = state
        .verifier
        .verify(id_token, &snapshot, Accept::Any, now)
        .await
        .inspect_err(|e| {
            state
                .metrics
                .token_rejections
                .get_or_create(&vec![("reason", e.label().to_owned())])
                .inc();
        })?;
    if !token.audiences.iter().any(|a| a == client_id) {
        return Err(ApiError::unauthorized(
            "invalid_client",
            format!("client_id {client_id:?} is not the token's audience"),
        ));
    }
    if !snapshot.apps.contains_key(target) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("target {target:?} is not a SAMLApp"),
        ));
    }
    if !token.is_service_account {
        check_id_token(&token, &snapshot, target, client_id)?;
    }
    let session = state
        .issuer
        .for_token(
            state,
            &snapshot,
            &token,
            Some(target),
            request.role.as_deref(),
            request.principal.as_deref(),
            now,
        )
        .await?;
    let c = &session.credentials;
    Ok(Json(serde_json::json!({
        "Credentials": {
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret_access_key,
            "SessionToken": c.session_token,
            "Expiration": c.expiration.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        },
        "AssumedRoleUser": {"Arn": c.assumed_role_arn, "AssumedRoleId": c.assumed_role_id},
        "Subject": c.subject,
        "SubjectType": c.subject_type,
        "Issuer": c.issuer,
        "Audience": c.audience,
        "NameQualifier": c.name_qualifier,
    }))
    .into_response())
}

/// What the sign-in path demands of an id_token beyond its audience, and what naming a person
/// by email demands:
/// - OpenID Connect Core §3.1.3.7: a token with several audiences carries `azp`, and an `azp`
///   must be the client asking (`client_id`);
/// - when the Connection's subject claim, or the NameID probe the SAMLApp `target` would use,
///   is the email, the provider must not say `email_verified: false`, or anyone who can type
///   an address into the provider becomes its owner.
fn check_id_token(
    token: &VerifiedToken,
    snapshot: &Snapshot,
    target: &str,
    client_id: &str,
) -> Result<(), ApiError> {
    let shown = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).take(200).collect() };
    match token.claims.get("azp") {
        None if token.audiences.len() > 1 => {
            return Err(ApiError::unauthorized(
                "invalid_client",
                format!(
                    "the token has {} audiences and no azp; client_id {client_id:?} must be its authorized party",
                    token.audiences.len()
                ),
            ));
        }
        None => {}
        Some(serde_json::Value::String(azp)) if azp == client_id => {}
        Some(serde_json::Value::String(azp)) => {
            return Err(ApiError::unauthorized(
                "invalid_client",
                format!(
                    "client_id {client_id:?} is not the token's authorized party (azp {:?})",
                    shown(azp)
                ),
            ));
        }
        Some(_) => {
            return Err(ApiError::unauthorized(
                "invalid_token",
                "token claim \"azp\" is missing or not of the right type",
            ));
        }
    }
    let Some(ConnectionKind::Oidc(o)) = snapshot
        .connections
        .get(&token.connection)
        .and_then(|c| c.spec.kind().ok())
    else {
        return Ok(());
    };
    let is_email = |claim: &str| claim == o.claims.email || claim == "email";
    // The NameID `target` would carry, if it is the person's email address.
    let by_email = snapshot.apps.get(target).and_then(|app| {
        let user_id = token
            .claims
            .get(&o.claims.subject)
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let profile = person_profile(snapshot, token, user_id);
        let attributes = saml::profile::attributes(&app.spec, &profile);
        let name_id = saml::profile::name_id(&app.spec, &profile, &attributes);
        [o.claims.email.as_str(), "email"]
            .into_iter()
            .find(|claim| {
                token.claims.get(*claim).and_then(|v| v.as_str()) == Some(name_id.as_str())
            })
            .map(str::to_owned)
    });
    let named_by = if is_email(&o.claims.subject) {
        Some(o.claims.subject.clone())
    } else {
        by_email
    };
    let unverified = match token.claims.get("email_verified") {
        Some(serde_json::Value::Bool(verified)) => !verified,
        Some(serde_json::Value::String(verified)) => verified.eq_ignore_ascii_case("false"),
        _ => false,
    };
    match named_by {
        Some(claim) if unverified => Err(ApiError::forbidden(format!(
            "connection {:?} names this person by the {claim:?} claim, and the identity provider says that email is not verified (email_verified is false)",
            token.connection
        ))),
        _ => Ok(()),
    }
}
