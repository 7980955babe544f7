//! Thin handlers of people's sign-in: cookies in, the pure steps of [`crate::login`], pages out.

use std::net::SocketAddr;

use axum::Form;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;
use serde::Deserialize;

use super::AppState;
use crate::crd::{ConnectionKind, SAMLApp};
use crate::login::authn_request::{self, AuthnRequest};
use crate::login::flow::{self, Flow, Identity, OidcPending, RoleStep};
use crate::login::pages::{self, Choice, RoleOption};
use crate::login::{
    CLIENT_SECRET_KEY, FLOW_COOKIE, FLOW_SECONDS, LoginError, SESSION_COOKIE, SESSION_SECONDS,
    client, cookie_name, later, oidc, page_headers, random_id, set_cookie, users,
};
use crate::saml::{self, AppSettings, AssertionContent, DocumentIds};
use crate::store::{Snapshot, secret_value};
use crate::tokens::Accept;

const AUTHN_PASSWORD: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport";
/// The largest sealed cookie value sent; browsers keep cookies up to about 4 KiB.
const MAX_COOKIE_BYTES: usize = 3800;
/// The longest RelayState carried through (AWS passes console URLs in it).
const MAX_RELAY_STATE: usize = 2048;

/// The key the client's wrong passwords are counted under: its address (through trusted
/// proxies' `X-Forwarded-For`), an IPv6 one per /64; `unknown` without connect info.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Ok(Self("unknown".to_owned()));
        };
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let ip = client::client_ip(peer.0.ip(), &forwarded, &state.login.trusted_proxies());
        Ok(Self(client::address_key(ip)))
    }
}

/// A page with its cookies.
struct Page {
    response: Response,
}

impl Page {
    fn html(body: String, form_action: &str, script: bool) -> Self {
        let mut response = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response();
        page_headers(&mut response, form_action, script);
        Self { response }
    }

    fn redirect(to: &str) -> Self {
        let mut response = Redirect::to(to).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Self { response }
    }

    fn cookie(mut self, value: String) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value) {
            self.response.headers_mut().append(header::SET_COOKIE, v);
        }
        self
    }
}

fn secure(state: &AppState) -> bool {
    state.public_url.starts_with("https://")
}

fn url(state: &AppState, path: &str) -> String {
    format!("{}{path}", state.public_url.trim_end_matches('/'))
}

/// Cookie `base` as this server names it (`__Host-base` over https: a cookie of the bare name,
/// which any subdomain or plain-http page could have planted, is not read).
fn cookie_value<'h>(state: &AppState, headers: &'h HeaderMap, base: &str) -> Option<&'h str> {
    let name = cookie_name(base, secure(state));
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| crate::login::cookie(h, &name))
        .filter(|v| !v.is_empty())
}

fn open_flow(state: &AppState, headers: &HeaderMap, now: Timestamp) -> Result<Flow, LoginError> {
    let key = state.login.key()?;
    let sealed = cookie_value(state, headers, FLOW_COOKIE).ok_or(LoginError::NoFlow)?;
    Ok(key.open(FLOW_COOKIE, sealed, now)?)
}

/// The signed-in person, `None` without a session or after it expired.
fn open_session(
    state: &AppState,
    headers: &HeaderMap,
    now: Timestamp,
) -> Result<Option<Identity>, LoginError> {
    let key = state.login.key()?;
    let Some(sealed) = cookie_value(state, headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    match key.open(SESSION_COOKIE, sealed, now) {
        Ok(identity) => Ok(Some(identity)),
        Err(crate::login::SealError::Expired) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn flow_cookie(state: &AppState, flow: &Flow, now: Timestamp) -> Result<String, LoginError> {
    let sealed = state
        .login
        .key()?
        .seal(FLOW_COOKIE, flow, later(now, FLOW_SECONDS))?;
    if sealed.len() > MAX_COOKIE_BYTES {
        return Err(LoginError::BadRequest(
            "the RelayState is too long to carry through sign-in".into(),
        ));
    }
    Ok(set_cookie(
        FLOW_COOKIE,
        Some(&sealed),
        FLOW_SECONDS,
        secure(state),
    ))
}

fn session_cookie(
    state: &AppState,
    identity: &Identity,
    now: Timestamp,
) -> Result<String, LoginError> {
    let key = state.login.key()?;
    let expires = later(now, SESSION_SECONDS);
    let mut identity = identity.clone();
    identity.csrf = oidc::random_token()?;
    let identity = &identity;
    let mut sealed = key.seal(SESSION_COOKIE, identity, expires)?;
    if sealed.len() > MAX_COOKIE_BYTES {
        // Browsers drop larger cookies silently; keep only what names the person.
        let mut lean = identity.clone();
        lean.claims.clear();
        sealed = key.seal(SESSION_COOKIE, &lean, expires)?;
    }
    if sealed.len() > MAX_COOKIE_BYTES {
        return Err(LoginError::Token(format!(
            "it names {} groups, more than a session cookie can hold; ask your platform team to \
             have the identity provider send only the groups rolegate needs",
            identity.groups.len()
        )));
    }
    Ok(set_cookie(
        SESSION_COOKIE,
        Some(&sealed),
        SESSION_SECONDS,
        secure(state),
    ))
}

/// Answers a result, logging and counting refusals, and clearing a cookie that did not open.
fn finish(state: &AppState, route: &'static str, result: Result<Page, LoginError>) -> Response {
    let status = match &result {
        Ok(page) => page.response.status(),
        Err(e) => e.status(),
    };
    state
        .metrics
        .http_responses
        .get_or_create(&vec![
            ("route", route.to_owned()),
            ("status", status.as_u16().to_string()),
        ])
        .inc();
    match result {
        Ok(page) => page.response,
        Err(e) => {
            tracing::info!(route, status = status.as_u16(), reason = e.label(), description = %e, "sign-in refused");
            let clear = matches!(e, LoginError::BadCookie);
            let mut response = e.into_response();
            if clear {
                for name in [FLOW_COOKIE, SESSION_COOKIE] {
                    if let Ok(v) = HeaderValue::from_str(&set_cookie(name, None, 0, secure(state)))
                    {
                        response.headers_mut().append(header::SET_COOKIE, v);
                    }
                }
            }
            response
        }
    }
}

fn app<'s>(snapshot: &'s Snapshot, name: &str) -> Result<(&'s SAMLApp, AppSettings), LoginError> {
    let app = snapshot
        .apps
        .get(name)
        .ok_or_else(|| LoginError::NotFound(format!("there is no SAMLApp {name:?}")))?;
    let settings =
        AppSettings::from_app(app).map_err(|e| LoginError::Unavailable(e.to_string()))?;
    Ok((app, settings))
}

/// The Connections people may sign in to `app` with, by name.
fn person_connections(app: &SAMLApp, snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .connections
        .iter()
        .filter(|(name, c)| {
            matches!(
                c.spec.kind(),
                Ok(ConnectionKind::Oidc(_) | ConnectionKind::Static(_))
            ) && (app.spec.connections.is_empty() || app.spec.connections.contains(name))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

fn missing_secret(what: &str, name: &str) -> LoginError {
    LoginError::Unavailable(format!(
        "the {what} Secret {name:?} is not there (in a cluster, rolegate reads only Secrets of \
         its own namespace that are labelled {})",
        crate::store::index::LOGIN_SECRET_LABEL
    ))
}

/// Whether people may sign in to `app_name` with `connection`.
fn allow_connection(
    snapshot: &Snapshot,
    app_name: &str,
    connection: &str,
) -> Result<(), LoginError> {
    let (app, _) = app(snapshot, app_name)?;
    if person_connections(app, snapshot)
        .iter()
        .any(|c| c == connection)
    {
        Ok(())
    } else {
        Err(LoginError::NotAllowed(format!(
            "SAMLApp {app_name:?} does not let people sign in with Connection {connection:?}"
        )))
    }
}

/// `SAMLRequest` and `RelayState` of either binding.
#[derive(Debug, Default, Deserialize)]
pub struct SsoParams {
    #[serde(rename = "SAMLRequest")]
    saml_request: Option<String>,
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

/// Whether a request says it comes from this site, or from the person themselves (a typed URL, a
/// bookmark): `Sec-Fetch-Site` of `same-origin` or `none`. Another site, and a client that does
/// not say, are not.
fn same_origin(headers: &HeaderMap) -> bool {
    matches!(
        headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()),
        Some("same-origin" | "none")
    )
}

fn begin(
    state: &AppState,
    app_name: &str,
    params: SsoParams,
    post: bool,
    confirm: bool,
) -> Result<Page, LoginError> {
    let now = state.clock.now();
    let snapshot = state.store.current();
    let (_, settings) = app(&snapshot, app_name)?;
    let request: Option<AuthnRequest> = match params.saml_request.as_deref() {
        None => None,
        Some(raw) => {
            let xml = if post {
                authn_request::decode_post(raw)?
            } else {
                authn_request::decode_redirect(raw)?
            };
            let request = authn_request::parse(&xml)?;
            authn_request::check(&request, app_name, &settings)?;
            Some(request)
        }
    };
    let relay_state = params.relay_state.filter(|r| !r.is_empty());
    if relay_state
        .as_ref()
        .is_some_and(|r| r.len() > MAX_RELAY_STATE)
    {
        return Err(LoginError::BadRequest(format!(
            "RelayState is longer than {MAX_RELAY_STATE} bytes"
        )));
    }
    let flow = Flow {
        app: app_name.to_owned(),
        relay_state,
        // Only IdP-initiated sign-ins are held for a click; an SP's AuthnRequest names its
        // own ACS, checked above.
        confirm: confirm && request.is_none(),
        request,
        oidc: None,
    };
    Ok(Page::redirect("/login/continue").cookie(flow_cookie(state, &flow, now)?))
}

/// `GET /samlp/{app}`: IdP-initiated sign-in, or SP-initiated with the HTTP-Redirect binding.
/// An IdP-initiated one from another site ends in a click to continue rather than an
/// auto-submitted Response.
pub async fn sso_get(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    Query(params): Query<SsoParams>,
) -> Response {
    let result = begin(&state, &app, params, false, !same_origin(&headers));
    finish(&state, "/samlp/{app}", result)
}

/// `POST /samlp/{app}`: SP-initiated sign-in with the HTTP-POST binding.
pub async fn sso_post(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Form(params): Form<SsoParams>,
) -> Response {
    let result = if params.saml_request.is_none() {
        Err(LoginError::BadRequest(
            "the POST carries no SAMLRequest".into(),
        ))
    } else {
        begin(&state, &app, params, true, false)
    };
    finish(&state, "/samlp/{app}", result)
}

/// The answer of the role picker or of the click to continue.
#[derive(Default, Deserialize)]
pub struct RoleForm {
    role: Option<String>,
    #[serde(default)]
    csrf: String,
    confirm: Option<String>,
}

impl std::fmt::Debug for RoleForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleForm")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// What a person posted: the role chosen (none when the app takes no role), and the form's
/// CSRF token.
struct Posted<'f> {
    role: Option<&'f str>,
    csrf: &'f str,
}

async fn advance(
    state: &AppState,
    headers: &HeaderMap,
    posted: Option<Posted<'_>>,
) -> Result<Page, LoginError> {
    let now = state.clock.now();
    let flow = open_flow(state, headers, now)?;
    let session = open_session(state, headers, now)?;
    let snapshot = state.store.current();
    let (app, _) = app(&snapshot, &flow.app)?;
    let allowed = person_connections(app, &snapshot);
    if let Some(identity) = session.filter(|i| allowed.contains(&i.connection)) {
        if let Some(posted) = &posted {
            // The form must come from a page this session was shown (sealed, HttpOnly: no
            // other site can read or forge it).
            if identity.csrf.is_empty() || !oidc::same_secret(posted.csrf, &identity.csrf) {
                return Err(LoginError::Csrf);
            }
        }
        return role_page(
            state,
            &snapshot,
            &flow,
            &identity,
            posted.map(|p| p.role),
            now,
        );
    }
    if posted.is_some() {
        return Err(LoginError::NoFlow);
    }
    match allowed.as_slice() {
        [] => Err(LoginError::Unavailable(format!(
            "SAMLApp {:?} allows no oidc or static Connection to sign people in",
            flow.app
        ))),
        [one] => Ok(Page::redirect(&format!("/login/via/{one}"))),
        several => {
            let choices: Vec<Choice> = several
                .iter()
                .map(|name| Choice {
                    href: format!("/login/via/{name}"),
                    label: snapshot
                        .connections
                        .get(name)
                        .and_then(|c| c.spec.display_name.clone())
                        .unwrap_or_else(|| name.clone()),
                })
                .collect();
            Ok(Page::html(
                pages::chooser(&flow.app, &choices),
                "'self'",
                false,
            ))
        }
    }
}

fn role_option(grant: &crate::policy::RoleGrant) -> RoleOption {
    RoleOption {
        value: flow::role_value(grant),
        name: grant
            .session
            .role_arn
            .rsplit('/')
            .next()
            .unwrap_or(&grant.session.role_arn)
            .to_owned(),
        detail: format!(
            "Account {}",
            grant.session.role_arn.split(':').nth(4).unwrap_or_default()
        ),
    }
}

/// The next page for a signed-in person. `posted` is `Some` after a form of theirs (with its
/// CSRF token already checked), holding the role chosen, if any.
fn role_page(
    state: &AppState,
    snapshot: &Snapshot,
    flow: &Flow,
    identity: &Identity,
    posted: Option<Option<&str>>,
    now: Timestamp,
) -> Result<Page, LoginError> {
    let who = identity.email.as_deref().unwrap_or(&identity.user);
    let grant = match flow::role_step(&flow.app, identity, snapshot, posted.flatten()) {
        RoleStep::NoRole(message) => return Err(LoginError::NoRole(message)),
        RoleStep::NotYours(message) => return Err(LoginError::NotAllowed(message)),
        RoleStep::Pick(grants) => {
            let roles: Vec<RoleOption> = grants.iter().map(role_option).collect();
            return Ok(Page::html(
                pages::role_picker(&flow.app, who, "/login/continue", &roles, &identity.csrf),
                "'self'",
                false,
            ));
        }
        RoleStep::Issue(grant) if flow.confirm && posted.is_none() => {
            let role = grant.as_ref().map(role_option);
            return Ok(Page::html(
                pages::confirm(
                    &flow.app,
                    who,
                    "/login/continue",
                    role.as_ref(),
                    &identity.csrf,
                ),
                "'self'",
                false,
            ));
        }
        RoleStep::Issue(grant) => grant,
    };
    let (app, settings) = app(snapshot, &flow.app)?;
    let keys = state.keys.get(&flow.app).ok_or_else(|| {
        LoginError::Unavailable(format!("SAMLApp {:?} has no signing key yet", flow.app))
    })?;
    let provider = super::issue::connection_provider(snapshot, &identity.connection);
    let (name_id, attributes) = flow::person_assertion(app, identity, provider, grant.as_ref());
    let authn_context = match snapshot
        .connections
        .get(&identity.connection)
        .map(|c| c.spec.kind())
    {
        Some(Ok(ConnectionKind::Static(_))) => AUTHN_PASSWORD,
        _ => saml::AUTHN_UNSPECIFIED,
    };
    let ids = DocumentIds {
        response: random_id()?,
        assertion: random_id()?,
    };
    let content = AssertionContent {
        name_id: &name_id,
        attributes: &attributes,
        authn_context,
    };
    let in_response_to = flow.request.as_ref().map(|r| r.id.as_str());
    let signed = saml::build_response_to(
        &settings,
        &content,
        &ids,
        in_response_to,
        now,
        keys.active.as_ref(),
    )
    .map_err(|e| LoginError::Internal(e.to_string()))?;
    state
        .metrics
        .assertions_signed
        .get_or_create(&vec![("app", flow.app.clone())])
        .inc();
    tracing::info!(
        app = %flow.app,
        user = %identity.user,
        connection = %identity.connection,
        role = grant.as_ref().map_or("", |g| g.session.role_arn.as_str()),
        in_response_to = in_response_to.unwrap_or(""),
        "signed a person's assertion"
    );
    let form_action = if settings
        .recipient
        .chars()
        .any(|c| c.is_whitespace() || c == ';' || c == ',')
    {
        "*".to_owned()
    } else {
        settings.recipient.clone()
    };
    Ok(Page::html(
        pages::auto_post(
            &settings.recipient,
            &signed.to_base64(),
            flow.relay_state.as_deref(),
        ),
        &form_action,
        true,
    )
    .cookie(set_cookie(FLOW_COOKIE, None, 0, secure(state))))
}

/// `GET /login/signout`: forgets the signed-in person and goes back to choosing how to sign in
/// (the sign-in in progress, if any, is kept).
pub async fn signout(State(state): State<AppState>) -> Response {
    let page = Page::redirect("/login/continue").cookie(set_cookie(
        SESSION_COOKIE,
        None,
        0,
        secure(&state),
    ));
    finish(&state, "/login/signout", Ok(page))
}

/// `GET /login/continue`: after sign-in, or to choose how to sign in.
pub async fn continue_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let result = advance(&state, &headers, None).await;
    finish(&state, "/login/continue", result)
}

/// `POST /login/continue`: the role picker's answer, or the click to continue; either carries
/// the session's CSRF token.
pub async fn continue_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<RoleForm>,
) -> Response {
    let role = form.role.as_deref().filter(|r| !r.is_empty());
    let result = if role.is_some() || form.confirm.as_deref() == Some("yes") {
        let posted = Posted {
            role,
            csrf: &form.csrf,
        };
        advance(&state, &headers, Some(posted)).await
    } else {
        Err(LoginError::BadRequest("choose a role".into()))
    };
    finish(&state, "/login/continue", result)
}

async fn via(state: &AppState, connection: &str, headers: &HeaderMap) -> Result<Page, LoginError> {
    let now = state.clock.now();
    let mut flow = open_flow(state, headers, now)?;
    let snapshot = state.store.current();
    allow_connection(&snapshot, &flow.app, connection)?;
    let kind = snapshot
        .connections
        .get(connection)
        .and_then(|c| c.spec.kind().ok())
        .ok_or_else(|| LoginError::NotFound(format!("there is no Connection {connection:?}")))?;
    match kind {
        ConnectionKind::Oidc(o) => {
            let discovery = state.login.provider.discover(&o.issuer).await?;
            let pending = OidcPending {
                connection: connection.to_owned(),
                state: oidc::random_token()?,
                nonce: oidc::random_token()?,
                verifier: oidc::random_token()?,
            };
            let to = oidc::authorize_url(
                &discovery,
                o,
                &url(state, "/login/callback"),
                &pending.state,
                &pending.nonce,
                &pending.verifier,
            )?;
            flow.oidc = Some(pending);
            Ok(Page::redirect(&to).cookie(flow_cookie(state, &flow, now)?))
        }
        ConnectionKind::Static(_) => Ok(Page::html(
            pages::password_form(&flow.app, &format!("/login/via/{connection}"), "", None),
            "'self'",
            false,
        )),
        ConnectionKind::Kubernetes(_) => Err(LoginError::NotAllowed(format!(
            "Connection {connection:?} is for workloads, not people"
        ))),
    }
}

/// `GET /login/via/{connection}`: starts signing in with one Connection.
pub async fn via_get(
    State(state): State<AppState>,
    Path(connection): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = via(&state, &connection, &headers).await;
    finish(&state, "/login/via/{connection}", result)
}

/// The password form.
#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

impl std::fmt::Debug for PasswordForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordForm")
            .field("username", &users::log_name(&self.username))
            .finish_non_exhaustive()
    }
}

async fn password(
    state: &AppState,
    connection: &str,
    client: &str,
    headers: &HeaderMap,
    form: PasswordForm,
) -> Result<Page, LoginError> {
    let now = state.clock.now();
    let flow = open_flow(state, headers, now)?;
    let snapshot = state.store.current();
    allow_connection(&snapshot, &flow.app, connection)?;
    let Some(Ok(ConnectionKind::Static(s))) =
        snapshot.connections.get(connection).map(|c| c.spec.kind())
    else {
        return Err(LoginError::NotAllowed(format!(
            "Connection {connection:?} does not take passwords"
        )));
    };
    let username = form.username.trim().to_owned();
    if username.is_empty() || username.len() > 256 || form.password.len() > 1024 {
        return Err(LoginError::BadRequest(
            "enter a username and a password".into(),
        ));
    }
    let secret = snapshot
        .secret(&s.secret_ref, &state.login.namespace)
        .ok_or_else(|| missing_secret("users", &s.secret_ref.name))?;
    let list =
        users::users_from_secret(secret, &s.secret_ref.name).map_err(LoginError::Unavailable)?;
    let turn = state.login.password_turn().await?;
    let attempt = users::Attempt {
        connection: connection.to_owned(),
        user: username.clone(),
        address: client.to_owned(),
    };
    // Reserved before bcrypt runs, so concurrent attempts cannot all pass the limit; settled in
    // the blocking task, so a client that hangs up still has its attempt counted.
    let reservation = state
        .login
        .attempts
        .reserve(&attempt, now)
        .map_err(|refused| LoginError::TooManyAttempts {
            limit: refused.limit,
            until: refused.until.strftime("%H:%M:%S UTC").to_string(),
        })?;
    let (name, password) = (username.clone(), form.password);
    let user = tokio::task::spawn_blocking(move || {
        let user = users::authenticate(&list, &name, &password).cloned();
        match &user {
            Some(_) => reservation.succeed(),
            None => reservation.fail(),
        }
        drop(turn);
        user
    })
    .await
    .map_err(|e| LoginError::Internal(e.to_string()))?;
    let Some(user) = user else {
        // Never the typed name itself: it may be a password, or carry forged log lines.
        let user = users::log_name(&username);
        tracing::info!(connection, user_hash = %user, client, "wrong password");
        let mut page = Page::html(
            pages::password_form(
                &flow.app,
                &format!("/login/via/{connection}"),
                &username,
                Some("The username or password is wrong."),
            ),
            "'self'",
            false,
        );
        *page.response.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(page);
    };
    let mut claims = std::collections::BTreeMap::new();
    claims.insert("sub".to_owned(), vec![user.username.clone()]);
    claims.insert("username".to_owned(), vec![user.username.clone()]);
    if let Some(email) = &user.email {
        claims.insert("email".to_owned(), vec![email.clone()]);
    }
    if let Some(name) = &user.name {
        claims.insert("name".to_owned(), vec![name.clone()]);
    }
    if !user.groups.is_empty() {
        claims.insert("groups".to_owned(), user.groups.clone());
    }
    let identity = Identity {
        connection: connection.to_owned(),
        user: user.username.clone(),
        email: user.email.clone(),
        name: user.name.clone(),
        groups: user.groups.clone(),
        claims,
        csrf: String::new(),
    };
    tracing::info!(connection, user = %identity.user, "signed in with a password");
    Ok(Page::redirect("/login/continue").cookie(session_cookie(state, &identity, now)?))
}

/// `POST /login/via/{connection}`: a static Connection's username and password.
pub async fn via_post(
    State(state): State<AppState>,
    Path(connection): Path<String>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<PasswordForm>,
) -> Response {
    let result = password(&state, &connection, &client, &headers, form).await;
    finish(&state, "/login/via/{connection}", result)
}

/// The provider's redirect back.
#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

impl std::fmt::Debug for CallbackQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackQuery")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

async fn callback_inner(
    state: &AppState,
    headers: &HeaderMap,
    query: CallbackQuery,
) -> Result<Page, LoginError> {
    let now = state.clock.now();
    let mut flow = open_flow(state, headers, now)?;
    let pending = flow.oidc.take().ok_or(LoginError::NoFlow)?;
    let same_state = query
        .state
        .as_deref()
        .is_some_and(|s| oidc::same_secret(s, &pending.state));
    if !same_state {
        return Err(LoginError::StateMismatch);
    }
    if let Some(error) = query.error {
        return Err(LoginError::Denied {
            error: clean(&error),
            description: query
                .error_description
                .as_deref()
                .map(clean)
                .unwrap_or_default(),
        });
    }
    let code = query
        .code
        .filter(|c| !c.is_empty())
        .ok_or_else(|| LoginError::BadRequest("the identity provider sent no code".into()))?;
    let snapshot = state.store.current();
    let Some(Ok(ConnectionKind::Oidc(o))) = snapshot
        .connections
        .get(&pending.connection)
        .map(|c| c.spec.kind())
    else {
        return Err(LoginError::NotFound(format!(
            "there is no oidc Connection {:?}",
            pending.connection
        )));
    };
    let discovery = state.login.provider.discover(&o.issuer).await?;
    // RFC 9207: a provider that names itself in the response must be the one asked.
    if let Some(iss) = query.iss.as_deref()
        && iss.trim_end_matches('/') != discovery.issuer.trim_end_matches('/')
    {
        return Err(LoginError::Token(format!(
            "the authorization response comes from issuer {:?}, not from {:?} of Connection {:?}",
            clean(iss),
            discovery.issuer,
            pending.connection
        )));
    }
    let client_secret = match &o.client_secret_ref {
        None => None,
        Some(reference) => {
            let secret = snapshot
                .secret(reference, &state.login.namespace)
                .ok_or_else(|| missing_secret("client secret", &reference.name))?;
            let value = secret_value(secret, CLIENT_SECRET_KEY).ok_or_else(|| {
                LoginError::Unavailable(format!(
                    "Secret {:?} has no {CLIENT_SECRET_KEY}",
                    reference.name
                ))
            })?;
            Some(
                String::from_utf8(value.to_vec())
                    .map_err(|_| {
                        LoginError::Unavailable(format!(
                            "{CLIENT_SECRET_KEY} of Secret {:?} is not UTF-8",
                            reference.name
                        ))
                    })?
                    .trim()
                    .to_owned(),
            )
        }
    };
    let id_token = state
        .login
        .provider
        .exchange(
            &discovery,
            &o.client_id,
            client_secret.as_deref(),
            &code,
            &url(state, "/login/callback"),
            &pending.verifier,
        )
        .await?;
    let token = state
        .verifier
        .verify(&id_token, &snapshot, Accept::Any, now)
        .await
        .map_err(|e| match e {
            crate::tokens::TokenError::Jwks { .. } => LoginError::Provider(e.to_string()),
            _ => LoginError::Token(e.to_string()),
        })?;
    if token.connection != pending.connection {
        return Err(LoginError::Token(format!(
            "the id_token was issued by {:?}, not by {:?} of Connection {:?}",
            clean(&token.issuer),
            o.issuer,
            pending.connection
        )));
    }
    let nonce = token
        .claims
        .get("nonce")
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    if !oidc::same_secret(nonce, &pending.nonce) {
        return Err(LoginError::NonceMismatch);
    }
    if let Some(azp) = token.claims.get("azp").and_then(|a| a.as_str())
        && azp != o.client_id
    {
        return Err(LoginError::Token(format!(
            "the id_token was issued to client {:?}",
            clean(azp)
        )));
    }
    let identity = flow::identity_from_claims(&pending.connection, &o.claims, &token.claims)
        .map_err(LoginError::Token)?;
    tracing::info!(connection = %pending.connection, user = %identity.user, "signed in through OpenID Connect");
    Ok(Page::redirect("/login/continue")
        .cookie(flow_cookie(state, &flow, now)?)
        .cookie(session_cookie(state, &identity, now)?))
}

/// `GET /login/callback`: the OpenID provider's redirect with the authorization code.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let result = callback_inner(&state, &headers, query).await;
    finish(&state, "/login/callback", result)
}
