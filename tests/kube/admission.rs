//! Mutating admission for the test API server: on a write, every matching webhook of every
//! MutatingWebhookConfiguration is called over HTTPS, its certificate verified against the
//! configuration's `caBundle` only, and its JSON patch applied, as kube-apiserver does.
//!
//! Grounded in "Dynamic Admission Control" (kubernetes.io/docs/reference/access-authn-authz/
//! extensible-admission-controllers/) and the `admissionregistration.k8s.io/v1` reference:
//! - matching: `rules` (operations, apiGroups, apiVersions, resources with `*` and `pods/*`,
//!   scope), `namespaceSelector` against the Namespace's labels (the API server sets
//!   `kubernetes.io/metadata.name` on every Namespace), `objectSelector` against the object's;
//! - `clientConfig.service` is reached as `https://NAME.NAMESPACE.svc:PORT/PATH` and the
//!   certificate must be valid for `NAME.NAMESPACE.svc`; `clientConfig.url` as given; `caBundle`
//!   is what the API server trusts for it;
//! - `timeoutSeconds` defaults to 10 and is sent as `?timeout=Ns`; `failurePolicy` defaults to
//!   Fail; `sideEffects` other than None/NoneOnDryRun refuse dry-run requests;
//! - the request is an `admission.k8s.io/v1` AdmissionReview (uid, kind, resource,
//!   requestKind, requestResource, name, namespace, operation, userInfo, object, oldObject,
//!   dryRun, options); the response must carry the same uid; `patchType: JSONPatch`;
//!   `allowed: false` rejects with the webhook's status; `warnings` reach the client;
//! - "Webhooks are called in order": configurations sorted by name, webhooks in list order;
//!   `reinvocationPolicy: IfNeeded` calls a webhook once more if a later one changed the object.
//!
//! Messages are kube-apiserver's (apiserver admission/plugin/webhook/mutating/dispatcher.go,
//! request/admissionreview.go, errors/statuserror.go, util/webhook's ErrCallingWebhook).
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::BodyExt as _;
use serde_json::{Map, Value, json};
use tokio_rustls::rustls;

use super::auth::{Lookup, Status, User, random_uuid};

/// Where a webhook is reached.
struct Endpoint {
    /// The name the certificate must be valid for.
    host: String,
    /// The socket to connect to.
    addr: SocketAddr,
    /// Path and query, with `timeout=`.
    target: String,
    /// The full URL as the real API server prints it in errors.
    url: String,
}

/// One webhook of one configuration, as read from the store.
struct Hook {
    configuration: String,
    index: usize,
    name: String,
    raw: Value,
}

impl Hook {
    fn uid(&self) -> String {
        format!("{}/{}/{}", self.configuration, self.name, self.index)
    }
    fn ignore_failures(&self) -> bool {
        self.raw["failurePolicy"].as_str() == Some("Ignore")
    }
    fn timeout_seconds(&self) -> u64 {
        self.raw["timeoutSeconds"].as_u64().unwrap_or(10)
    }
    fn reinvocable(&self) -> bool {
        self.raw["reinvocationPolicy"].as_str() == Some("IfNeeded")
    }
}

/// What a webhook call can end in, as the real dispatcher tells them apart.
enum Failure {
    /// `ErrCallingWebhook`: subject to the failure policy.
    Calling(String),
    /// Anything else (a rejection, an unsupported dry run, a patch that does not apply):
    /// returned to the client whatever the failure policy.
    Final(Status),
}

/// Calls every MutatingWebhookConfiguration webhook that matches, in order, and applies their
/// patches. Ok is the object to store and the warnings for the client's `Warning` headers;
/// Err is the `Status` to answer with.
#[allow(clippy::too_many_arguments)]
pub async fn mutate(
    lookup: &dyn Lookup,
    services: &HashMap<(String, String, u16), SocketAddr>,
    operation: &str,
    resource: (&str, &str, &str),
    namespace: &str,
    object: Value,
    user: &User,
    dry_run: bool,
) -> Result<(Value, Vec<String>), Status> {
    // Read everything from the store first: nothing of it is held across a webhook call.
    let mut configurations = lookup.list(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        None,
    );
    configurations.sort_by(|a, b| {
        a["metadata"]["name"]
            .as_str()
            .cmp(&b["metadata"]["name"].as_str())
    });
    let hooks: Vec<Hook> = configurations
        .iter()
        .flat_map(|c| {
            let configuration = c["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            c["webhooks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(move |(index, raw)| Hook {
                    configuration: configuration.clone(),
                    index,
                    name: raw["name"].as_str().unwrap_or_default().to_owned(),
                    raw,
                })
        })
        .collect();
    if hooks.is_empty() {
        return Ok((object, Vec::new()));
    }
    let namespace_labels = if namespace.is_empty() {
        None
    } else {
        Some(namespace_labels(lookup, namespace))
    };

    let mut object = object;
    let mut warnings = Vec::new();
    let mut previously_invoked: BTreeSet<String> = BTreeSet::new();
    let mut reinvoke: BTreeSet<String> = BTreeSet::new();
    let mut should_reinvoke = false;
    for round in 0..2 {
        if round == 1 && !should_reinvoke {
            break;
        }
        for hook in &hooks {
            if !should_call(
                hook,
                operation,
                resource,
                namespace,
                &namespace_labels,
                &object,
            )? {
                continue;
            }
            // In the second round only webhooks that asked for it and ran before a change.
            if round == 1 && !reinvoke.contains(&hook.uid()) {
                continue;
            }
            match call(
                hook,
                services,
                operation,
                resource,
                namespace,
                &object,
                user,
                dry_run,
                &mut warnings,
            )
            .await
            {
                Ok(Some(patched)) => {
                    let changed = patched != object;
                    object = patched;
                    if changed && round == 0 {
                        reinvoke.extend(previously_invoked.iter().cloned());
                        should_reinvoke = true;
                    }
                }
                Ok(None) => {}
                Err(Failure::Final(status)) => return Err(status),
                Err(Failure::Calling(reason)) => {
                    if !hook.ignore_failures() {
                        return Err(Status::internal(&format!(
                            "failed calling webhook {:?}: {reason}",
                            hook.name
                        )));
                    }
                    // failurePolicy Ignore: admitted as if this webhook did not exist.
                }
            }
            if round == 0 && hook.reinvocable() {
                previously_invoked.insert(hook.uid());
            }
        }
    }
    Ok((object, warnings))
}

/// The Namespace's labels with `kubernetes.io/metadata.name`, or the 404 the real matcher
/// answers for a namespace that does not exist.
fn namespace_labels(lookup: &dyn Lookup, namespace: &str) -> Result<Map<String, Value>, Status> {
    let ns = lookup
        .get("", "namespaces", None, namespace)
        .ok_or_else(|| Status::not_found("", "namespaces", namespace))?;
    let mut labels = ns["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels
        .entry("kubernetes.io/metadata.name")
        .or_insert_with(|| json!(namespace));
    Ok(labels)
}

/// The real `ShouldCallHook`: rules, then namespaceSelector, then objectSelector.
fn should_call(
    hook: &Hook,
    operation: &str,
    (group, version, resource): (&str, &str, &str),
    namespace: &str,
    namespace_labels: &Option<Result<Map<String, Value>, Status>>,
    object: &Value,
) -> Result<bool, Status> {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let rules = hook.raw["rules"].as_array().cloned().unwrap_or_default();
    let any_rule = rules.iter().any(|rule| {
        let has = |field: &str, value: &str| {
            rule[field]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "*" || v == value))
        };
        let scope_ok = match rule["scope"].as_str().unwrap_or("*") {
            "Cluster" => namespace.is_empty(),
            "Namespaced" => !namespace.is_empty(),
            _ => true,
        };
        let resource_ok = rule["resources"].as_array().is_some_and(|a| {
            a.iter().filter_map(Value::as_str).any(|r| {
                let (res, sub) = r.split_once('/').unwrap_or((r, ""));
                (res == "*" || res == resource) && (sub == "*" || sub == subresource)
            })
        });
        has("operations", operation)
            && has("apiGroups", group)
            && has("apiVersions", version)
            && resource_ok
            && scope_ok
    });
    if !any_rule {
        return Ok(false);
    }
    if hook.raw["matchConditions"]
        .as_array()
        .is_some_and(|c| !c.is_empty())
    {
        // CEL is not evaluated here; refusing is better than guessing.
        return Err(Status::internal(&format!(
            "webhook {:?}: matchConditions are not supported by the test API server",
            hook.name
        )));
    }
    // Cluster-scoped objects other than Namespaces are never exempted by a namespaceSelector.
    if let Some(labels) = namespace_labels {
        let selector = &hook.raw["namespaceSelector"];
        if !selector_is_empty(selector) {
            let labels = labels.as_ref().map_err(Clone::clone)?;
            if !selector_matches(selector, labels).map_err(|e| Status::internal(&e))? {
                return Ok(false);
            }
        }
    }
    let selector = &hook.raw["objectSelector"];
    if !selector_is_empty(selector) {
        let labels = object["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        if !selector_matches(selector, &labels).map_err(|e| Status::internal(&e))? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn selector_is_empty(selector: &Value) -> bool {
    selector.is_null()
        || selector.as_object().is_some_and(|o| {
            o.get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
                && o.get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
        })
}

/// A metav1.LabelSelector against labels: every matchLabels pair and every matchExpression
/// must hold. Err for an invalid selector, worded as apimachinery's `LabelSelectorAsSelector`.
pub fn selector_matches(selector: &Value, labels: &Map<String, Value>) -> Result<bool, String> {
    if let Some(pairs) = selector["matchLabels"].as_object() {
        for (k, v) in pairs {
            if labels.get(k) != Some(v) {
                return Ok(false);
            }
        }
    }
    for expression in selector["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let key = expression["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = expression["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let value = labels.get(key).and_then(Value::as_str);
        let holds = match expression["operator"].as_str().unwrap_or_default() {
            op @ ("In" | "NotIn") => {
                if values.is_empty() {
                    return Err(format!(
                        "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty ({op})"
                    ));
                }
                let inside = value.is_some_and(|v| values.contains(&v));
                if op == "In" { inside } else { !inside }
            }
            op @ ("Exists" | "DoesNotExist") => {
                if !values.is_empty() {
                    return Err(format!(
                        "values: Invalid value: {values:?}: values set must be empty for exists and does not exist ({op})"
                    ));
                }
                (op == "Exists") == value.is_some()
            }
            other => return Err(format!("{other:?} is not a valid label selector operator")),
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Calls one webhook. Ok(Some) is the patched object, Ok(None) an admission without a patch.
#[allow(clippy::too_many_arguments)]
async fn call(
    hook: &Hook,
    services: &HashMap<(String, String, u16), SocketAddr>,
    operation: &str,
    (group, version, resource): (&str, &str, &str),
    namespace: &str,
    object: &Value,
    user: &User,
    dry_run: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<Value>, Failure> {
    if dry_run {
        match hook.raw["sideEffects"].as_str() {
            None => return Err(Failure::Calling("Webhook SideEffects is nil".into())),
            Some("None" | "NoneOnDryRun") => {}
            Some(_) => {
                return Err(Failure::Final(Status::bad_request(&format!(
                    "admission webhook {:?} does not support dry run",
                    hook.name
                ))));
            }
        }
    }
    let versions = hook.raw["admissionReviewVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !versions.iter().any(|v| v == "v1") {
        return Err(Failure::Calling(
            "could not create admission objects: webhook does not accept known AdmissionReview versions (v1)".into(),
        ));
    }
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let kind = object["kind"].as_str().unwrap_or_default();
    let uid = random_uuid();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let mut options = json!({"apiVersion": "meta.k8s.io/v1", "kind": match operation {
        "CREATE" => "CreateOptions", "UPDATE" => "UpdateOptions", "DELETE" => "DeleteOptions", _ => "" }});
    if dry_run {
        options["dryRun"] = json!(["All"]);
    }
    let mut request = json!({
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": resource},
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": user.user_info(),
        "object": object,
        "oldObject": null,
        "dryRun": dry_run,
        "options": options,
    });
    if !subresource.is_empty() {
        request["subResource"] = json!(subresource);
        request["requestSubResource"] = json!(subresource);
    }
    if name.is_empty()
        && let Some(m) = request.as_object_mut()
    {
        m.remove("name");
    }
    let review =
        json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request});
    let timeout = hook.timeout_seconds();
    let endpoint = endpoint(hook, services, timeout).map_err(Failure::Calling)?;
    let tls = tls_config(&hook.raw["clientConfig"]["caBundle"])
        .map_err(|e| Failure::Calling(format!("could not get REST client: {e}")))?;
    let body = serde_json::to_vec(&review).unwrap_or_default();
    let sent = tokio::time::timeout(Duration::from_secs(timeout), post(&endpoint, tls, body)).await;
    let response = match sent {
        Err(_) => {
            return Err(Failure::Calling(format!(
                "failed to call webhook: Post {:?}: context deadline exceeded",
                endpoint.url
            )));
        }
        Ok(Err(e)) => {
            return Err(Failure::Calling(format!(
                "failed to call webhook: Post {:?}: {e}",
                endpoint.url
            )));
        }
        Ok(Ok(r)) => r,
    };
    let reviewed = verify_response(&uid, &response)
        .map_err(|e| Failure::Calling(format!("received invalid webhook response: {e}")))?;
    let answer = &reviewed["response"];
    if let Some(w) = answer["warnings"].as_array() {
        // The API server's warning recorder keeps each distinct text once.
        for text in w.iter().filter_map(Value::as_str) {
            if !warnings.iter().any(|seen| seen == text) {
                warnings.push(text.to_owned());
            }
        }
    }
    if answer["allowed"] != json!(true) {
        return Err(Failure::Final(rejection(&hook.name, &answer["status"])));
    }
    let Some(patch) = answer["patch"].as_str().filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    if answer["patchType"].as_str() != Some("JSONPatch") {
        return Err(Failure::Calling(format!(
            "unsupported patch type {:?}",
            answer["patchType"].as_str().unwrap_or_default()
        )));
    }
    let ops: json_patch::Patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .map_err(|e| {
            Failure::Calling(format!(
                "received undecodable patch in webhook response: {e}"
            ))
        })?;
    if ops.0.is_empty() {
        return Ok(None);
    }
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &ops)
        .map_err(|e| Failure::Final(Status::internal(&e.to_string())))?;
    Ok(Some(patched))
}

/// The URL the real API server calls, and where that really listens here.
fn endpoint(
    hook: &Hook,
    services: &HashMap<(String, String, u16), SocketAddr>,
    timeout: u64,
) -> Result<Endpoint, String> {
    let client = &hook.raw["clientConfig"];
    let query = format!("timeout={timeout}s");
    if let Some(service) = client["service"].as_object() {
        let name = service
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ns = service
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let path = service.get("path").and_then(Value::as_str).unwrap_or("/");
        let port = service
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(443);
        let host = format!("{name}.{ns}.svc");
        let target = format!("{path}?{query}");
        let url = format!("https://{host}:{port}{target}");
        let addr = services
            .get(&(ns.to_owned(), name.to_owned(), port))
            .copied()
            .ok_or_else(|| {
                format!("failed to call webhook: Post {url:?}: service {name:?} not found")
            })?;
        return Ok(Endpoint {
            host,
            addr,
            target,
            url,
        });
    }
    let Some(raw) = client["url"].as_str() else {
        return Err(
            "could not get REST client: webhook clientConfig has neither service nor url".into(),
        );
    };
    let parsed = reqwest::Url::parse(raw)
        .map_err(|e| format!("could not get REST client: invalid url {raw:?}: {e}"))?;
    if parsed.scheme() != "https" {
        return Err(format!(
            "could not get REST client: url {raw:?} is not https"
        ));
    }
    let host = parsed
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let target = match parsed.query() {
        Some(q) => format!("{}?{q}&{query}", parsed.path()),
        None => format!("{}?{query}", parsed.path()),
    };
    let url = format!(
        "https://{}{target}",
        parsed
            .host_str()
            .map(|h| match parsed.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
            .unwrap_or_default()
    );
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                format!(
                    "failed to call webhook: Post {url:?}: dial tcp: lookup {host}: no such host"
                )
            })?,
    };
    Ok(Endpoint {
        host,
        addr,
        target,
        url,
    })
}

/// TLS that trusts the caBundle and nothing else.
fn tls_config(ca_bundle: &Value) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(b64) = ca_bundle.as_str().filter(|s| !s.is_empty()) {
        let pem_bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "unable to load root certificates: caBundle is not base64".to_owned())?;
        let blocks = pem::parse_many(&pem_bytes)
            .ok()
            .filter(|b| b.iter().any(|p| p.tag() == "CERTIFICATE"))
            .ok_or_else(|| {
                "unable to load root certificates: unable to parse bytes as PEM block".to_owned()
            })?;
        for block in blocks.iter().filter(|p| p.tag() == "CERTIFICATE") {
            roots
                .add(rustls::pki_types::CertificateDer::from(
                    block.contents().to_vec(),
                ))
                .map_err(|e| format!("unable to load root certificates: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Go's wording for what went wrong, so messages read as a cluster's.
fn tls_error(e: &std::io::Error, host: &str) -> String {
    let Some(err) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return format!("remote error: {e}");
    };
    use rustls::CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                .into()
        }
        rustls::Error::InvalidCertificate(C::NotValidForNameContext { presented, .. }) => format!(
            "tls: failed to verify certificate: x509: certificate is valid for {}, not {host}",
            presented
                .iter()
                .map(|n| presented_name(n))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName) => {
            format!("tls: failed to verify certificate: x509: certificate is not valid for {host}")
        }
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "tls: failed to verify certificate: x509: certificate has expired or is not yet valid"
            .into(),
        other => format!("tls: {other}"),
    }
}

/// rustls reports a certificate's names as `DnsName("x")`; Go prints `x`.
fn presented_name(name: &str) -> &str {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .unwrap_or(name)
}

/// POSTs `body` over TLS to the endpoint; Ok is the HTTP status and the body.
async fn post(
    endpoint: &Endpoint,
    tls: Arc<rustls::ClientConfig>,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let tcp = tokio::net::TcpStream::connect(endpoint.addr)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                format!("dial tcp {}: connect: connection refused", endpoint.addr)
            }
            _ => format!("dial tcp {}: {e}", endpoint.addr),
        })?;
    let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
        .map_err(|e| format!("tls: invalid server name {:?}: {e}", endpoint.host))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| tls_error(&e, &endpoint.host))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = hyper::Request::post(endpoint.target.as_str())
        .header(hyper::header::HOST, endpoint.host.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::ACCEPT, "application/json, */*")
        .header(hyper::header::USER_AGENT, "kube-apiserver-admission")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes.to_vec()))
}

/// The real `VerifyAdmissionResponse` (and client-go's handling of a non-2xx answer).
fn verify_response(uid: &str, (status, body): &(u16, Vec<u8>)) -> Result<Value, String> {
    if !(200..300).contains(status) {
        let text = String::from_utf8_lossy(body);
        return Err(match status {
            400 => "the server rejected our request for an unknown reason".into(),
            404 => "the server could not find the requested resource".into(),
            500..=599 => format!(
                "an error on the server ({:?}) has prevented the request from succeeding",
                text.trim()
            ),
            code => format!(
                "the server responded with the status code {code} but did not return more information"
            ),
        });
    }
    let review: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let response = &review["response"];
    if !response.is_object() {
        return Err("webhook response was absent".into());
    }
    let got = response["uid"].as_str().unwrap_or_default();
    if got != uid {
        return Err(format!("expected response.uid={uid:?}, got {got:?}"));
    }
    let api_version = review["apiVersion"].as_str().unwrap_or_default();
    let kind = review["kind"].as_str().unwrap_or_default();
    if api_version != "admission.k8s.io/v1" || kind != "AdmissionReview" {
        let (g, v) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        return Err(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {g}/{v}, Kind={kind}"
        ));
    }
    let has_patch = response["patch"].as_str().is_some_and(|p| !p.is_empty());
    let has_type = !response["patchType"].is_null();
    if has_patch && !has_type {
        return Err("webhook returned response.patch but not response.patchType".into());
    }
    if !has_patch && has_type {
        return Err("webhook returned response.patchType but not response.patch".into());
    }
    if has_type && response["patchType"].as_str().is_none_or(str::is_empty) {
        return Err(format!(
            "webhook returned invalid response.patchType of {:?}",
            ""
        ));
    }
    Ok(review)
}

/// A webhook's `allowed: false` as the client sees it (errors.ToStatusErr).
fn rejection(webhook: &str, result: &Value) -> Status {
    let denied_by = format!("admission webhook {webhook:?} denied the request");
    let mut body = if result.is_object() {
        result.clone()
    } else {
        json!({})
    };
    let code = body["code"].as_u64().filter(|c| *c >= 400).unwrap_or(400);
    let message = match (body["message"].as_str(), body["reason"].as_str()) {
        (Some(m), _) if !m.is_empty() => format!("{denied_by}: {m}"),
        (_, Some(r)) if !r.is_empty() => format!("{denied_by}: {r}"),
        _ => format!("{denied_by} without explanation"),
    };
    body["kind"] = json!("Status");
    body["apiVersion"] = json!("v1");
    if body["metadata"].is_null() {
        body["metadata"] = json!({});
    }
    body["status"] = json!("Failure");
    body["code"] = json!(code);
    body["message"] = json!(message);
    Status {
        code: u16::try_from(code).unwrap_or(400),
        body,
    }
}

/// A Go-style rendering of a field value in an error (apimachinery's `field.Error`): strings
/// quoted, numbers plain, string lists as `[]string{"a", "b"}`.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "[]string{{{}}}",
            items
                .iter()
                .map(|i| format!("{:?}", i.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// Collects field errors worded as apimachinery's `field.Error` prints them.
#[derive(Default)]
struct FieldErrors(Vec<super::schema::Cause>);

impl FieldErrors {
    fn push(&mut self, reason: &str, field: &str, body: String) {
        self.0.push(super::schema::Cause {
            reason: reason.into(),
            field: field.into(),
            message: format!("{field}: {body}"),
        });
    }
    fn required(&mut self, field: &str, detail: &str) {
        let body = if detail.is_empty() {
            "Required value".to_owned()
        } else {
            format!("Required value: {detail}")
        };
        self.push("FieldValueRequired", field, body);
    }
    fn forbidden(&mut self, field: &str, detail: &str) {
        self.push("FieldValueForbidden", field, format!("Forbidden: {detail}"));
    }
    fn invalid(&mut self, field: &str, value: &Value, detail: &str) {
        self.push(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {}: {detail}", go_value(value)),
        );
    }
    fn not_supported(&mut self, field: &str, value: &Value, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        self.push(
            "FieldValueNotSupported",
            field,
            format!(
                "Unsupported value: {}: supported values: {}",
                go_value(value),
                list.join(", ")
            ),
        );
    }
    fn duplicate(&mut self, field: &str, value: &Value) {
        self.push(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {}", go_value(value)),
        );
    }
}

/// An RFC 1123 subdomain (apimachinery's `IsDNS1123Subdomain`).
fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn one_of(errors: &mut FieldErrors, field: &str, value: &Value, supported: &[&str]) {
    if !value.is_null() && !value.as_str().is_some_and(|v| supported.contains(&v)) {
        errors.not_supported(field, value, supported);
    }
}

fn validate_selector(errors: &mut FieldErrors, field: &str, selector: &Value) {
    for (i, e) in selector["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let at = format!("{field}.matchExpressions[{i}]");
        let has_values = e["values"].as_array().is_some_and(|v| !v.is_empty());
        match e["operator"].as_str().unwrap_or_default() {
            "In" | "NotIn" if !has_values => errors.required(
                &format!("{at}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            ),
            "Exists" | "DoesNotExist" if has_values => errors.forbidden(
                &format!("{at}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => errors.invalid(
                &format!("{at}.operator"),
                &e["operator"],
                "not a valid selector operator",
            ),
        }
    }
}

/// Defaults and validates a MutatingWebhookConfiguration being written, as kube-apiserver's v1
/// defaulting (`SetDefaults_MutatingWebhook`: failurePolicy Fail, matchPolicy Equivalent,
/// empty selectors, timeoutSeconds 10, reinvocationPolicy Never, rule scope `*`, service port
/// 443) and `ValidateMutatingWebhookConfiguration` do. The causes are empty for a valid object;
/// otherwise the store answers 422 Invalid with them.
pub fn default_and_validate_configuration(object: &mut Value) -> Vec<super::schema::Cause> {
    default_and_validate_webhooks(object, true)
}

/// The same for a Mutating (`mutating`) or Validating WebhookConfiguration: a validating webhook
/// has no `reinvocationPolicy`.
pub fn default_and_validate_webhooks(
    object: &mut Value,
    mutating: bool,
) -> Vec<super::schema::Cause> {
    let mut errors = FieldErrors::default();
    let mut names: Vec<String> = Vec::new();
    let hooks = object["webhooks"].as_array_mut();
    for (i, hook) in hooks.into_iter().flatten().enumerate() {
        let at = format!("webhooks[{i}]");
        if !hook.is_object() {
            errors.invalid(&at, hook, "must be an object");
            continue;
        }
        // Defaulting first, as the API server decodes with defaults before validating.
        for (field, default) in [
            ("failurePolicy", json!("Fail")),
            ("matchPolicy", json!("Equivalent")),
            ("namespaceSelector", json!({})),
            ("objectSelector", json!({})),
            ("timeoutSeconds", json!(10)),
            ("reinvocationPolicy", json!("Never")),
        ] {
            if field == "reinvocationPolicy" && !mutating {
                continue;
            }
            if hook[field].is_null() {
                hook[field] = default;
            }
        }
        if let Some(rules) = hook["rules"].as_array_mut() {
            for rule in rules.iter_mut().filter(|r| r.is_object()) {
                if rule["scope"].is_null() {
                    rule["scope"] = json!("*");
                }
            }
        }
        if hook["clientConfig"]["service"].is_object()
            && hook["clientConfig"]["service"]["port"].is_null()
        {
            hook["clientConfig"]["service"]["port"] = json!(443);
        }

        let name = hook["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            errors.required(&format!("{at}.name"), "");
        } else if !is_dns1123_subdomain(name) {
            errors.invalid(&format!("{at}.name"), &hook["name"],
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')");
        } else if name.split('.').count() < 3 {
            errors.invalid(
                &format!("{at}.name"),
                &hook["name"],
                "should be a domain with at least three segments separated by dots",
            );
        }
        for (r, rule) in hook["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let rat = format!("{at}.rules[{r}]");
            let operations = rule["operations"].as_array().cloned().unwrap_or_default();
            if operations.is_empty() {
                errors.required(&format!("{rat}.operations"), "");
            }
            if operations.len() > 1 && operations.iter().any(|o| o == "*") {
                errors.invalid(
                    &format!("{rat}.operations"),
                    &rule["operations"],
                    "if '*' is present, must not specify other operations",
                );
            }
            for (o, op) in operations.iter().enumerate() {
                one_of(
                    &mut errors,
                    &format!("{rat}.operations[{o}]"),
                    op,
                    &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"],
                );
            }
            for (field, what) in [("apiGroups", "API groups"), ("apiVersions", "API versions")] {
                let items = rule[field].as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    errors.required(&format!("{rat}.{field}"), "");
                }
                if items.len() > 1 && items.iter().any(|g| g == "*") {
                    errors.invalid(
                        &format!("{rat}.{field}"),
                        &rule[field],
                        &format!("if '*' is present, must not specify other {what}"),
                    );
                }
            }
            let resources = rule["resources"].as_array().cloned().unwrap_or_default();
            if resources.is_empty() {
                errors.required(&format!("{rat}.resources"), "");
            }
            if resources.len() > 1 && resources.iter().any(|r| r == "*/*") {
                errors.invalid(
                    &format!("{rat}.resources"),
                    &rule["resources"],
                    "if '*/*' is present, must not specify other resources",
                );
            }
            if resources.iter().any(|r| r == "*")
                && resources
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|r| r != "*" && !r.contains('/'))
            {
                errors.invalid(
                    &format!("{rat}.resources"),
                    &rule["resources"],
                    "if '*' is present, must not specify other resources without subresources",
                );
            }
            one_of(
                &mut errors,
                &format!("{rat}.scope"),
                &rule["scope"],
                &["*", "Cluster", "Namespaced"],
            );
        }
        one_of(
            &mut errors,
            &format!("{at}.failurePolicy"),
            &hook["failurePolicy"],
            &["Fail", "Ignore"],
        );
        one_of(
            &mut errors,
            &format!("{at}.matchPolicy"),
            &hook["matchPolicy"],
            &["Equivalent", "Exact"],
        );
        if hook["sideEffects"].is_null() {
            errors.required(
                &format!("{at}.sideEffects"),
                "must specify one of None, NoneOnDryRun",
            );
        } else {
            one_of(
                &mut errors,
                &format!("{at}.sideEffects"),
                &hook["sideEffects"],
                &["None", "NoneOnDryRun"],
            );
        }
        let timeout = &hook["timeoutSeconds"];
        if !timeout.as_i64().is_some_and(|t| (1..=30).contains(&t)) {
            errors.invalid(
                &format!("{at}.timeoutSeconds"),
                timeout,
                "the timeout value must be between 1 and 30 seconds",
            );
        }
        validate_selector(
            &mut errors,
            &format!("{at}.namespaceSelector"),
            &hook["namespaceSelector"],
        );
        validate_selector(
            &mut errors,
            &format!("{at}.objectSelector"),
            &hook["objectSelector"],
        );
        if mutating {
            one_of(
                &mut errors,
                &format!("{at}.reinvocationPolicy"),
                &hook["reinvocationPolicy"],
                &["IfNeeded", "Never"],
            );
        }

        let client = &hook["clientConfig"];
        let cat = format!("{at}.clientConfig");
        match (client["url"].as_str(), client["service"].as_object()) {
            (Some(_), Some(_)) | (None, None) => {
                errors.required(&cat, "exactly one of url or service is required")
            }
            (Some(url), None) => {
                const FORM: &str = "; desired format: https://host[/path]";
                match reqwest::Url::parse(url) {
                    Err(e) => errors.required(
                        &format!("{cat}.url"),
                        &format!("url must be a valid URL: {e}{FORM}"),
                    ),
                    Ok(u) => {
                        if u.scheme() != "https" {
                            errors.invalid(
                                &format!("{cat}.url"),
                                &json!(u.scheme()),
                                &format!("'https' is the only allowed URL scheme{FORM}"),
                            );
                        }
                        if !u.username().is_empty() || u.password().is_some() {
                            errors.invalid(
                                &format!("{cat}.url"),
                                &json!(u.username()),
                                "user information is not permitted in the URL",
                            );
                        }
                        if let Some(f) = u.fragment() {
                            errors.invalid(
                                &format!("{cat}.url"),
                                &json!(f),
                                "fragments are not permitted in the URL",
                            );
                        }
                        if let Some(q) = u.query() {
                            errors.invalid(
                                &format!("{cat}.url"),
                                &json!(q),
                                "query parameters are not permitted in the URL",
                            );
                        }
                    }
                }
            }
            (None, Some(service)) => {
                let sat = format!("{cat}.service");
                if service
                    .get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    errors.required(&format!("{sat}.name"), "service name is required");
                }
                if service
                    .get("namespace")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    errors.required(&format!("{sat}.namespace"), "service namespace is required");
                }
                let port = service.get("port").cloned().unwrap_or(json!(443));
                if !port.as_i64().is_some_and(|p| (1..=65535).contains(&p)) {
                    errors.invalid(
                        &format!("{sat}.port"),
                        &port,
                        "port is not valid: must be between 1 and 65535, inclusive",
                    );
                }
                if let Some(path) = service.get("path").and_then(Value::as_str)
                    && !path.is_empty()
                    && path != "/"
                    && !path.starts_with('/')
                {
                    errors.invalid(
                        &format!("{sat}.path"),
                        &json!(path),
                        "must start with a '/'",
                    );
                }
            }
        }

        let versions = hook["admissionReviewVersions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let vat = format!("{at}.admissionReviewVersions");
        if versions.is_empty() {
            errors.required(&vat, "must specify one of v1, v1beta1");
        } else if !versions.iter().any(|v| v == "v1" || v == "v1beta1") {
            errors.invalid(
                &vat,
                &hook["admissionReviewVersions"],
                "must include at least one of v1, v1beta1",
            );
        }
        if !name.is_empty() {
            if names.iter().any(|n| n == name) {
                errors.duplicate(&format!("{at}.name"), &hook["name"]);
            } else {
                names.push(name.to_owned());
            }
        }
    }
    errors.0
}
