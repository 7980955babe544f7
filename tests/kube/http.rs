//! The HTTP layer: request parsing into Kubernetes' RequestInfo (path, verb, namespace, name,
//! subresource), then authentication, authorization, admission, the store, and the response
//! encoding, as the real server's handler chain (`k8s.io/apiserver/pkg/endpoints`) orders them:
//!
//! 1. **RequestInfo** (`request/requestinfo.go`): `/api/v1/...` and `/apis/GROUP/VERSION/...`,
//!    `namespaces/NS/RESOURCE[/NAME[/SUBRESOURCE]]`, `namespaces/NAME/status|finalize` as the
//!    namespace's own subresources; verbs get/list/watch (by `watch=true`), create, update,
//!    patch, delete, deletecollection; a list or watch with `fieldSelector=metadata.name=X` names
//!    X. Everything else is a non-resource request whose name is the path.
//! 2. **Authentication** (<https://kubernetes.io/docs/reference/access-authn-authz/authentication/>):
//!    a bearer token checked by `auth::Tokens::authenticate`; an invalid one is 401; none at all
//!    is `system:anonymous` in `system:unauthenticated` (anonymous auth is on by default).
//! 3. **Authorization**: `rbac::authorize`; a denial is 403 with the authorizer's message.
//! 4. **Admission** for Pod CREATE: the built-in ServiceAccount plugin (default
//!    `serviceAccountName`, 403 for a missing ServiceAccount, the `kube-api-access-*` projected
//!    volume mounted in every container unless `automountServiceAccountToken: false`), after the
//!    Pod defaults of the API (`restartPolicy`, `dnsPolicy`, `imagePullPolicy`, …), then the
//!    mutating webhooks (`admission::mutate`), then validation and storage.
//!    (<https://kubernetes.io/docs/reference/access-authn-authz/admission-controllers/>)
//! 5. **Responses**: JSON, `Status` objects for errors, 201 for a create, `Warning: 299 - "…"`
//!    headers (<https://kubernetes.io/blog/2020/09/03/warnings/>), Tables for `as=Table`, lists
//!    with `limit`/`continue` (each page from the snapshot of the first) and
//!    `resourceVersionMatch=Exact`, watches as newline-delimited events.
//!
//! Every request is recorded as an [`AuditEntry`], with the code it got.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::auth::{Tokens, User};
use super::patch;
use super::rbac::{self, Attributes};
use super::resources::ResourceInfo;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{self, Part, Store, WriteOptions};
use super::{AuditEntry, Status, discovery, table, watch};

/// What every request handler shares.
pub struct Shared {
    pub store: Arc<Store>,
    pub tokens: Tokens,
    pub services: HashMap<(String, String, u16), std::net::SocketAddr>,
    pub audit: Mutex<Vec<AuditEntry>>,
    pub address: String,
    pub url: String,
    /// The OwnerReferencesPermissionEnforcement admission plugin (off by default, as upstream).
    pub owner_references_enforced: std::sync::atomic::AtomicBool,
}

/// RBAC rules an admission check used besides the request's own (for the audit entry).
#[derive(Debug, Clone)]
struct ExtraRules(Vec<String>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The parsed request.
#[derive(Debug, Clone, Default)]
struct RequestInfo {
    resource_request: bool,
    verb: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
    path: String,
}

fn parse_request(method: &Method, path: &str, query: &HashMap<String, String>) -> RequestInfo {
    let mut info = RequestInfo {
        path: path.to_owned(),
        verb: method.as_str().to_lowercase(),
        ..RequestInfo::default()
    };
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let rest: &[&str] = match parts.first() {
        Some(&"api") if parts.len() >= 3 => {
            info.version = parts[1].to_owned();
            &parts[2..]
        }
        Some(&"apis") if parts.len() >= 4 => {
            info.group = parts[1].to_owned();
            info.version = parts[2].to_owned();
            &parts[3..]
        }
        _ => return info,
    };
    let mut rest = rest;
    if rest[0] == "namespaces" && rest.len() > 1 {
        info.namespace = rest[1].to_owned();
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    info.resource_request = true;
    info.resource = rest[0].to_owned();
    if let Some(name) = rest.get(1) {
        info.name = (*name).to_owned();
    }
    if let Some(sub) = rest.get(2) {
        info.subresource = (*sub).to_owned();
    }
    if info.resource == "namespaces" && info.name.is_empty() && !info.namespace.is_empty() {
        info.name = info.namespace.clone();
    }
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    info.verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if info.name.is_empty() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if info.name.is_empty() => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    }
    .to_owned();
    if matches!(info.verb.as_str(), "list" | "watch")
        && let Some(fs) = query.get("fieldSelector")
    {
        for part in fs.split(',') {
            if let Some(name) = part.trim().strip_prefix("metadata.name=") {
                info.name = name.trim_start_matches('=').to_owned();
            }
        }
    }
    info
}

fn attributes(info: &RequestInfo) -> Attributes {
    if info.resource_request {
        Attributes {
            verb: info.verb.clone(),
            api_group: info.group.clone(),
            resource: info.resource.clone(),
            subresource: info.subresource.clone(),
            namespace: info.namespace.clone(),
            name: info.name.clone(),
        }
    } else {
        Attributes::non_resource(&info.verb, &info.path)
    }
}

fn json_response(code: u16, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn status_response(status: &Status) -> Response {
    json_response(status.code, &status.body)
}

fn not_found_path() -> Status {
    super::status_with(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - {}", serde_json::Value::String(w.clone()));
        if let Ok(v) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or_default())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The single entry point: every request.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The API server's request size limit (`MaxRequestBodyBytes`, 3 MiB).
    const LIMIT: usize = 3 * 1024 * 1024;
    let Ok(body) = axum::body::to_bytes(body, LIMIT).await else {
        return status_response(&super::status_with(
            413,
            "RequestEntityTooLarge",
            &format!("Request entity too large: limit is {LIMIT}"),
            None,
        ));
    };
    let now = Timestamp::now();
    let query = parse_query(uri.query());
    let request = parse_request(&method, uri.path(), &query);
    let attrs = attributes(&request);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or("").trim().to_owned());
    let user = match bearer {
        None => Some(User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..User::default()
        }),
        Some(token) => shared
            .tokens
            .authenticate(&*shared.store, &token, now.as_second()),
    };
    let record = |user: &User, code: u16, allowed_by: Option<String>| {
        let entry = AuditEntry {
            user: user.name.clone(),
            groups: user.groups.clone(),
            attrs: attrs.clone(),
            code,
            allowed_by,
            user_agent: user_agent.clone(),
        };
        shared
            .audit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(entry);
    };
    let Some(user) = user else {
        let status = super::status_with(401, "Unauthorized", "Unauthorized", None);
        record(&User::default(), 401, None);
        return status_response(&status);
    };
    let user = match impersonate(&shared, &user, &headers) {
        Ok(impersonated) => impersonated,
        Err(status) => {
            record(&user, status.code, None);
            return status_response(&status);
        }
    };
    let allowed_by = match rbac::authorize(&*shared.store, &user, &attrs) {
        Ok(rule) => rule,
        Err(message) => {
            let status = rbac::forbidden(&attrs, &message);
            record(&user, 403, None);
            return status_response(&status);
        }
    };
    let response = if request.resource_request {
        resource_request(&shared, &request, &query, &headers, &body, &user, now).await
    } else {
        non_resource(&shared, &request, &headers)
    };
    let allowed_by = match response.extensions().get::<ExtraRules>() {
        Some(extra) if !extra.0.is_empty() => format!("{allowed_by}; {}", extra.0.join("; ")),
        _ => allowed_by,
    };
    record(&user, response.status().as_u16(), Some(allowed_by));
    response
}

/// User impersonation (`Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid`; kubectl
/// `--as`/`--as-group`): each needs the `impersonate` verb on `users`, `serviceaccounts`
/// (`system:serviceaccount:NS:NAME`), `groups` or `authentication.k8s.io/uids`; the request then
/// runs as the impersonated user, in `system:authenticated` (and a ServiceAccount's groups).
/// (<https://kubernetes.io/docs/reference/access-authn-authz/authentication/#user-impersonation>)
fn impersonate(shared: &Shared, user: &User, headers: &HeaderMap) -> Result<User, Status> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    };
    let Some(name) = values("Impersonate-User").into_iter().next() else {
        if !values("Impersonate-Group").is_empty() || !values("Impersonate-Uid").is_empty() {
            return Err(store::bad_request(
                "requested impersonation of groups or a uid without impersonating a user",
            ));
        }
        return Ok(user.clone());
    };
    let groups = values("Impersonate-Group");
    let uid = values("Impersonate-Uid")
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut checks = Vec::new();
    let service_account = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, sa)| (ns.to_owned(), sa.to_owned()));
    match &service_account {
        Some((ns, sa)) => checks.push(Attributes::resource(
            "impersonate",
            "",
            "serviceaccounts",
            ns,
            sa,
        )),
        None => checks.push(Attributes::resource("impersonate", "", "users", "", &name)),
    }
    for group in &groups {
        checks.push(Attributes::resource("impersonate", "", "groups", "", group));
    }
    if !uid.is_empty() {
        checks.push(Attributes::resource(
            "impersonate",
            "authentication.k8s.io",
            "uids",
            "",
            &uid,
        ));
    }
    for check in &checks {
        if let Err(message) = rbac::authorize(&*shared.store, user, check) {
            return Err(rbac::forbidden(check, &message));
        }
    }
    let mut impersonated = groups;
    if let Some((ns, _)) = &service_account
        && impersonated.is_empty()
    {
        impersonated.push("system:serviceaccounts".into());
        impersonated.push(format!("system:serviceaccounts:{ns}"));
    }
    if !impersonated.iter().any(|g| g == "system:authenticated") {
        impersonated.push("system:authenticated".into());
    }
    Ok(User {
        name,
        groups: impersonated,
        uid,
        ..User::default()
    })
}

fn non_resource(shared: &Shared, request: &RequestInfo, headers: &HeaderMap) -> Response {
    if request.verb != "get" {
        return status_response(&super::status_with(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            None,
        ));
    }
    let resources = shared.store.resources();
    let parts: Vec<&str> = request
        .path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let aggregated = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|accept| accept.split(',').next())
        .is_some_and(|first| first.contains("as=APIGroupDiscoveryList") && first.contains("v=v2"));
    if aggregated && matches!(parts.as_slice(), ["api"] | ["apis"]) {
        let body = discovery::aggregated(&resources, parts == ["api"]);
        let mut response = json_response(200, &body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(discovery::AGGREGATED),
        );
        return response;
    }
    let found = match parts.as_slice() {
        ["api"] => Some(discovery::api_versions(&shared.address)),
        ["apis"] => Some(discovery::api_group_list(&resources)),
        ["api", version] => discovery::api_resource_list(&resources, "", version),
        ["apis", group] => discovery::api_group(&resources, group),
        ["apis", group, version] => discovery::api_resource_list(&resources, group, version),
        ["version"] => Some(discovery::version()),
        ["openapi", "v3"] => Some(discovery::openapi_index(
            &resources,
            shared.store.current_rv(),
        )),
        ["openapi", "v3", "api", version] => {
            discovery::openapi_group_version(&resources, "", version)
        }
        ["openapi", "v3", "apis", group, version] => {
            discovery::openapi_group_version(&resources, group, version)
        }
        ["openid", "v1", "jwks"] => Some(shared.tokens.jwks()),
        [".well-known", "openid-configuration"] => {
            Some(shared.tokens.openid_configuration(&shared.url))
        }
        ["healthz" | "livez" | "readyz"] => {
            let mut response = Response::new(Body::from("ok"));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return response;
        }
        _ => None,
    };
    match found {
        Some(body) => json_response(200, &body),
        None => status_response(&not_found_path()),
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
}

/// `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`: metadata only
/// (what kube's `Api<PartialObjectMeta<K>>` asks for).
fn wants_metadata(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .next()
                .is_some_and(|first| first.contains("as=PartialObjectMetadata"))
        })
}

/// An object as `PartialObjectMetadata`.
pub fn partial(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
}

fn dry_run(query: &HashMap<String, String>) -> Result<bool, Status> {
    match query.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(store::bad_request(&format!(
            "Invalid dry run value: {other}: supported values: \"All\""
        ))),
    }
}

fn field_validation(query: &HashMap<String, String>) -> Result<String, Status> {
    match query.get("fieldValidation").map(String::as_str) {
        None | Some("") => Ok("Warn".into()),
        Some(v @ ("Strict" | "Warn" | "Ignore")) => Ok(v.into()),
        Some(other) => Err(store::bad_request(&format!(
            "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
        ))),
    }
}

fn parse_body(body: &[u8], headers: &HeaderMap) -> Result<Value, Status> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let base = content_type.split(';').next().unwrap_or_default().trim();
    if base == "application/vnd.kubernetes.protobuf"
        && let Some(object) = super::protobuf::decode(body)
    {
        return Ok(object);
    }
    if base != "application/json" && base != "*/*" {
        return Err(super::status_with(
            415,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: application/json (and application/vnd.kubernetes.protobuf for Namespace, ConfigMap, Secret and ServiceAccount); got {base}"
            ),
            None,
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        store::bad_request(&format!(
            "the body of the request could not be decoded: {e}"
        ))
    })
}

async fn resource_request(
    shared: &Shared,
    request: &RequestInfo,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
    user: &User,
    now: Timestamp,
) -> Response {
    match serve_resource(shared, request, query, headers, body, user, now).await {
        Ok(response) => response,
        Err(status) => status_response(&status),
    }
}

#[allow(clippy::too_many_lines)]
async fn serve_resource(
    shared: &Shared,
    request: &RequestInfo,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
    user: &User,
    now: Timestamp,
) -> Result<Response, Status> {
    let Some(info) = shared
        .store
        .resource(&request.group, &request.version, &request.resource)
    else {
        return Err(not_found_path());
    };
    let ns = request.namespace.as_str();
    let namespace_path =
        !(ns.is_empty() || (info.group.is_empty() && info.resource == "namespaces"));
    // The path's scope must be the resource's: a namespaced resource is reached under
    // `namespaces/NS/` (list, watch and deletecollection also across all namespaces), a
    // cluster-scoped one never is.
    let scope_ok = if info.namespaced {
        namespace_path || matches!(request.verb.as_str(), "list" | "watch" | "deletecollection")
    } else {
        !namespace_path
    };
    if !scope_ok {
        return Err(not_found_path());
    }
    let ns = if info.namespaced { ns } else { "" };
    let part = match request.subresource.as_str() {
        "" => Part::Main,
        "status" if info.status => Part::Status,
        "token" if info.group.is_empty() && info.resource == "serviceaccounts" => Part::Main,
        _ => return Err(not_found_path()),
    };
    if request.subresource == "status"
        && !matches!(request.verb.as_str(), "get" | "update" | "patch")
    {
        return Err(method_not_allowed());
    }
    let verb = request.verb.as_str();
    if !info.verbs.iter().any(|v| v == verb) && request.subresource.is_empty() {
        return Err(method_not_allowed());
    }
    let opts = || -> Result<WriteOptions, Status> {
        Ok(WriteOptions {
            now,
            dry_run: dry_run(query)?,
            field_validation: field_validation(query)?,
            legacy_event: false,
        })
    };
    match verb {
        "get" => {
            let object = shared.store.get(&info, ns, &request.name)?;
            if wants_table(headers) {
                let include = query
                    .get("includeObject")
                    .map_or("Metadata", String::as_str);
                return Ok(json_response(
                    200,
                    &table::table(&info, &[object], shared.store.current_rv(), include, now),
                ));
            }
            if wants_metadata(headers) {
                return Ok(json_response(200, &partial(&object)));
            }
            Ok(json_response(200, &object))
        }
        "list" => list(shared, &info, request, query, headers, now),
        "watch" => watch_response(shared, &info, request, query, headers),
        "create" => {
            let mut object = parse_body(body, headers)?;
            if request.subresource == "token" {
                let token = shared.tokens.token_request(
                    &*shared.store,
                    ns,
                    &request.name,
                    &object,
                    now.as_second(),
                )?;
                return Ok(json_response(201, &token));
            }
            if info.group == "authentication.k8s.io" && info.resource == "selfsubjectreviews" {
                // `kubectl auth whoami`.
                return Ok(json_response(
                    201,
                    &json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                            "metadata": {"creationTimestamp": null},
                            "status": {"userInfo": user.user_info()}}),
                ));
            }
            if info.group == "authorization.k8s.io" && info.resource == "selfsubjectaccessreviews" {
                return Ok(json_response(
                    201,
                    &self_subject_access_review(shared, user, &object),
                ));
            }
            if info.group == "authentication.k8s.io" && info.resource == "tokenreviews" {
                let review =
                    shared
                        .tokens
                        .token_review(&*shared.store, &object, now.as_second())?;
                return Ok(json_response(201, &review));
            }
            let opts = opts()?;
            let mut warnings = Vec::new();
            if info.group.is_empty() && info.resource == "pods" {
                pod_defaults(&mut object);
                service_account_admission(&shared.store, ns, &mut object)?;
                let (mutated, hook_warnings) = super::admission::mutate(
                    &*shared.store,
                    &shared.services,
                    "CREATE",
                    ("", "v1", "pods"),
                    ns,
                    object,
                    user,
                    opts.dry_run,
                )
                .await?;
                object = mutated;
                warnings = hook_warnings;
            }
            let mut extra = Vec::new();
            if enforced(shared) {
                extra = rbac::owner_references_permission(
                    &*shared.store,
                    user,
                    &attributes(request),
                    None,
                    &object,
                    &resolver(shared),
                )?;
            }
            let written = shared.store.create(&info, ns, object, &opts)?;
            warnings.extend(written.warnings);
            let mut response = with_warnings(json_response(201, &written.object), &warnings);
            response.extensions_mut().insert(ExtraRules(extra));
            Ok(response)
        }
        "update" => {
            let object = parse_body(body, headers)?;
            let opts = opts()?;
            let (written, extra) = guarded_update(
                shared,
                &info,
                request,
                user,
                part,
                &mut |_| Ok(object.clone()),
                &opts,
            )?;
            let code = if written.created { 201 } else { 200 };
            let mut response =
                with_warnings(json_response(code, &written.object), &written.warnings);
            response.extensions_mut().insert(ExtraRules(extra));
            Ok(response)
        }
        "patch" => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let kind = patch::patch_type(content_type, info.custom.is_some())?;
            let opts = opts()?;
            let (written, extra) = guarded_update(
                shared,
                &info,
                request,
                user,
                part,
                &mut |current| match current {
                    Some(current) => patch::apply(kind, current, body),
                    None => Err(store::not_found(&info, &request.name)),
                },
                &opts,
            )?;
            let mut response =
                with_warnings(json_response(200, &written.object), &written.warnings);
            response.extensions_mut().insert(ExtraRules(extra));
            Ok(response)
        }
        "delete" => {
            let options: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(body).map_err(|e| store::bad_request(&e.to_string()))?
            };
            let mut options = options;
            if let Some(p) = query.get("propagationPolicy") {
                options["propagationPolicy"] = json!(p);
            }
            let opts = opts()?;
            let object = shared
                .store
                .delete(&info, ns, &request.name, &options, &opts)?;
            Ok(json_response(200, &object))
        }
        "deletecollection" => {
            let (labels, fields) = selectors(&info, query)?;
            let (items, _) = shared.store.list(
                &info,
                if info.namespaced {
                    Some(ns).filter(|n| !n.is_empty())
                } else {
                    None
                },
                &labels,
                &fields,
            );
            let opts = opts()?;
            let mut deleted = Vec::new();
            for item in items {
                let name = item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let item_ns = item["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if let Ok(o) = shared
                    .store
                    .delete(&info, &item_ns, &name, &json!({}), &opts)
                {
                    deleted.push(o);
                }
            }
            Ok(json_response(
                200,
                &list_body(&info, deleted, shared.store.current_rv(), None),
            ))
        }
        _ => Err(method_not_allowed()),
    }
}

fn enforced(shared: &Shared) -> bool {
    shared
        .owner_references_enforced
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// An owner's (apiVersion, kind) -> (group, resource, namespaced), as a REST mapper.
fn resolver(shared: &Shared) -> impl Fn(&str, &str) -> Option<(String, String, bool)> + '_ {
    let resources = shared.store.resources();
    move |api_version: &str, kind: &str| {
        resources
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .map(|r| (r.group.clone(), r.resource.clone(), r.namespaced))
    }
}

/// An update or patch; with OwnerReferencesPermissionEnforcement on, the new object is
/// computed from a read, checked, and written only if nothing changed meanwhile (retried
/// otherwise), since the check reads the store and cannot run under its lock.
#[allow(clippy::too_many_arguments)]
fn guarded_update(
    shared: &Shared,
    info: &ResourceInfo,
    request: &RequestInfo,
    user: &User,
    part: Part,
    change: &mut dyn FnMut(Option<&Value>) -> Result<Value, Status>,
    opts: &WriteOptions,
) -> Result<(store::Written, Vec<String>), Status> {
    let ns = if info.namespaced {
        request.namespace.as_str()
    } else {
        ""
    };
    if !enforced(shared) || part != Part::Main {
        let written = shared
            .store
            .update(info, ns, &request.name, part, change, opts)?;
        return Ok((written, Vec::new()));
    }
    for _ in 0..8 {
        let current = shared.store.get(info, ns, &request.name).ok();
        let read_rv = current
            .as_ref()
            .map(|c| c["metadata"]["resourceVersion"].clone());
        let candidate = change(current.as_ref())?;
        let extra = rbac::owner_references_permission(
            &*shared.store,
            user,
            &attributes(request),
            current.as_ref(),
            &candidate,
            &resolver(shared),
        )?;
        let mut raced = false;
        let result = shared.store.update(
            info,
            ns,
            &request.name,
            part,
            &mut |now| {
                if now.map(|n| n["metadata"]["resourceVersion"].clone()) != read_rv {
                    raced = true;
                    return Err(super::status(409, "Conflict", "raced"));
                }
                change(now)
            },
            opts,
        );
        match result {
            Err(_) if raced => continue,
            other => return other.map(|w| (w, extra)),
        }
    }
    Err(super::status(
        500,
        "InternalError",
        "the object kept changing during the admission check",
    ))
}

/// `kubectl auth can-i`: the authorizer's answer for the review's attributes, as the caller.
fn self_subject_access_review(shared: &Shared, user: &User, review: &Value) -> Value {
    let spec = &review["spec"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let attrs = if spec["nonResourceAttributes"].is_object() {
        let n = &spec["nonResourceAttributes"];
        Attributes::non_resource(&s(&n["verb"]), &s(&n["path"]))
    } else {
        let r = &spec["resourceAttributes"];
        Attributes {
            verb: s(&r["verb"]),
            api_group: s(&r["group"]),
            resource: s(&r["resource"]),
            subresource: s(&r["subresource"]),
            namespace: s(&r["namespace"]),
            name: s(&r["name"]),
        }
    };
    let status = match rbac::authorize(&*shared.store, user, &attrs) {
        Ok(rule) => json!({"allowed": true, "reason": format!("allowed by {rule}")}),
        // The RBAC authorizer gives no reason for a denial (the 403 message is the server's).
        Err(_) => json!({"allowed": false}),
    };
    json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
           "metadata": {"creationTimestamp": null}, "spec": spec, "status": status})
}

fn method_not_allowed() -> Status {
    super::status_with(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        None,
    )
}

fn selectors(
    info: &ResourceInfo,
    query: &HashMap<String, String>,
) -> Result<(LabelSelector, FieldSelector), Status> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| store::bad_request(&e))?;
    let fields = FieldSelector::parse(
        query.get("fieldSelector").map_or("", String::as_str),
        info.extra_field_labels(),
    )
    .map_err(|e| store::bad_request(&e))?;
    Ok((labels, fields))
}

fn list_body(info: &ResourceInfo, mut items: Vec<Value>, rv: u64, next: Option<String>) -> Value {
    if !info.items_carry_type() {
        for item in &mut items {
            if let Value::Object(m) = item {
                m.remove("apiVersion");
                m.remove("kind");
            }
        }
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(), "metadata": metadata, "items": items})
}

fn list(
    shared: &Shared,
    info: &ResourceInfo,
    request: &RequestInfo,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    now: Timestamp,
) -> Result<Response, Status> {
    let (labels, fields) = selectors(info, query)?;
    let ns =
        (!request.namespace.is_empty() && info.namespaced).then_some(request.namespace.as_str());
    let (mut items, mut rv) = shared.store.list(info, ns, &labels, &fields);
    // resourceVersion=N (NotOlderThan, the default match): the current state is at least N,
    // unless N is from the future.
    if let Some(n) = query
        .get("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
        && n > rv
    {
        return Err(too_large(n, rv));
    }
    // Continue tokens: base64 JSON of the list's resourceVersion and the last key served.
    if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .ok_or_else(|| store::bad_request("continue key is not valid"))?;
        let token_rv = decoded["rv"].as_u64().unwrap_or(0);
        let Some(snapshot) = shared.store.list_at(info, ns, &labels, &fields, token_rv) else {
            return Err(super::status_with(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                None,
            ));
        };
        // The rest of the list as it was when the first page was served.
        let start = decoded["start"].as_str().unwrap_or_default().to_owned();
        items = snapshot;
        items.retain(|o| key_of(o) > start);
        rv = token_rv;
    } else if query.get("resourceVersionMatch").map(String::as_str) == Some("Exact") {
        let n = query
            .get("resourceVersion")
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                store::bad_request("resourceVersionMatch=Exact needs a resourceVersion")
            })?;
        items = shared
            .store
            .list_at(info, ns, &labels, &fields, n)
            .ok_or_else(|| store::expired(n, shared.store.oldest_rv()))?;
        rv = n;
    }
    let mut next = None;
    if let Some(limit) = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        && items.len() > limit
    {
        items.truncate(limit);
        let last = items.last().map(key_of).unwrap_or_default();
        let token = json!({"rv": rv, "start": last}).to_string();
        next = Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token));
    }
    if wants_table(headers) {
        let include = query
            .get("includeObject")
            .map_or("Metadata", String::as_str);
        let mut t = table::table(info, &items, rv, include, now);
        if let Some(next) = next {
            t["metadata"]["continue"] = json!(next);
        }
        return Ok(json_response(200, &t));
    }
    if wants_metadata(headers) {
        let mut body = list_body(info, items.iter().map(partial).collect(), rv, next);
        body["kind"] = json!("PartialObjectMetadataList");
        body["apiVersion"] = json!("meta.k8s.io/v1");
        return Ok(json_response(200, &body));
    }
    Ok(json_response(200, &list_body(info, items, rv, next)))
}

fn key_of(object: &Value) -> String {
    format!(
        "{}/{}",
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn watch_response(
    shared: &Shared,
    info: &ResourceInfo,
    request: &RequestInfo,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, Status> {
    let metadata_only = wants_metadata(headers);
    let table = wants_table(headers).then(|| {
        query
            .get("includeObject")
            .cloned()
            .unwrap_or_else(|| "Metadata".into())
    });
    let (labels, fields) = selectors(info, query)?;
    let ns = (!request.namespace.is_empty() && info.namespaced).then(|| request.namespace.clone());
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    let initial_events = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    if initial_events && !bookmarks {
        return Err(invalid_params(
            "allowWatchBookmarks",
            "sendInitialEvents requires setting allowWatchBookmarks to true",
        ));
    }
    if initial_events
        && query.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan")
    {
        return Err(invalid_params(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let filter = watch::Filter {
        info: info.clone(),
        namespace: ns.clone(),
        labels: labels.clone(),
        fields: fields.clone(),
        metadata_only,
        table,
    };
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or_default();
    let start = if rv.is_empty() || rv == "0" || initial_events {
        let (items, current, rx) =
            shared
                .store
                .watch_initial(info, ns.as_deref(), &labels, &fields);
        watch::Start::Initial {
            items,
            rv: current,
            initial_end: initial_events,
            rx,
        }
    } else {
        let Ok(n) = rv.parse::<u64>() else {
            return Err(store::bad_request(&format!(
                "invalid resource version: {rv}"
            )));
        };
        let current = shared.store.current_rv();
        if n > current {
            watch::Start::Expired(too_large(n, current))
        } else {
            match shared.store.watch_from(n) {
                Ok((backlog, rx)) => watch::Start::From { rv: n, backlog, rx },
                Err(status) => watch::Start::Expired(status),
            }
        }
    };
    let mut response = Response::new(watch::body(filter, start, bookmarks, timeout));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// 504 for a resourceVersion newer than the server's (the watch cache's
/// `waitUntilFreshAndBlock` gives up so).
fn too_large(requested: u64, current: u64) -> Status {
    super::status_with(
        504,
        "Timeout",
        &format!("Timeout: Too large resource version: {requested}, current: {current}"),
        Some(
            json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
        ),
    )
}

fn invalid_params(field: &str, message: &str) -> Status {
    super::status_with(
        422,
        "Invalid",
        &format!("ListOptions.meta.k8s.io \"\" is invalid: {field}: Forbidden: {message}"),
        Some(
            json!({"group": "meta.k8s.io", "kind": "ListOptions", "causes": [{"reason": "FieldValueForbidden", "message": format!("Forbidden: {message}"), "field": field}]}),
        ),
    )
}

/// The Pod defaults the API applies on decode (`pkg/apis/core/v1/defaults.go`), those a
/// webhook's patch might depend on.
fn pod_defaults(pod: &mut Value) {
    let spec = &mut pod["spec"];
    if !spec.is_object() {
        return;
    }
    for (field, value) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("schedulerName", json!("default-scheduler")),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
    ] {
        if spec[field].is_null() {
            spec[field] = value;
        }
    }
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers {
                let image = c["image"].as_str().unwrap_or_default().to_owned();
                if c["imagePullPolicy"].is_null() {
                    let latest = !image.contains(':') || image.ends_with(":latest");
                    c["imagePullPolicy"] = json!(if latest && !image.contains('@') {
                        "Always"
                    } else {
                        "IfNotPresent"
                    });
                }
                if c["terminationMessagePath"].is_null() {
                    c["terminationMessagePath"] = json!("/dev/termination-log");
                }
                if c["terminationMessagePolicy"].is_null() {
                    c["terminationMessagePolicy"] = json!("File");
                }
                if c["resources"].is_null() {
                    c["resources"] = json!({});
                }
            }
        }
    }
}

/// Where the ServiceAccount admission plugin mounts the API credentials.
const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ServiceAccount admission plugin, for a Pod CREATE.
fn service_account_admission(store: &Store, ns: &str, pod: &mut Value) -> Result<(), Status> {
    if !pod["spec"].is_object() {
        return Ok(());
    }
    let name = pod["spec"]["serviceAccountName"]
        .as_str()
        .or_else(|| pod["spec"]["serviceAccount"].as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_owned();
    pod["spec"]["serviceAccountName"] = json!(name);
    pod["spec"]["serviceAccount"] = json!(name);
    let Some(sa) = store.lookup_get("", "serviceaccounts", Some(ns), &name) else {
        let pod_name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        return Err(super::status_with(
            403,
            "Forbidden",
            &format!(
                "pods \"{pod_name}\" is forbidden: error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found"
            ),
            Some(json!({"name": pod_name, "kind": "pods"})),
        ));
    };
    let automount = pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| sa["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let already = ["containers", "initContainers"].iter().any(|list| {
        pod["spec"][list].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["volumeMounts"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == SA_MOUNT))
            })
        })
    });
    if already {
        return Ok(());
    }
    let mut suffix = [0u8; 5];
    let _ = aws_lc_rs::rand::fill(&mut suffix);
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = suffix
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    let volume_name = format!("kube-api-access-{suffix}");
    let volume = json!({"name": volume_name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
    ]}});
    match pod["spec"].get_mut("volumes") {
        Some(Value::Array(vs)) => vs.push(volume),
        _ => pod["spec"]["volumes"] = json!([volume]),
    }
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = pod["spec"].get_mut(list) {
            for c in containers {
                let mount = json!({"name": volume_name, "readOnly": true, "mountPath": SA_MOUNT});
                match c.get_mut("volumeMounts") {
                    Some(Value::Array(ms)) => ms.push(mount),
                    _ => c["volumeMounts"] = json!([mount]),
                }
            }
        }
    }
    Ok(())
}
