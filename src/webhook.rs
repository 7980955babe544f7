//! PURE: the mutating admission webhook for Pods. A pod whose service account a RoleMapping
//! grants a role (or that carries `rolegate.dev/inject: "true"`) gets, in every container and
//! init container, the two variables AWS SDKs read for container credentials and a projected
//! service-account token with audience `rolegate`. Idempotent; never overwrites what the user set.

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::policy::{self, RequestContext, Subject};
use crate::store::Snapshot;

/// Opt-in label.
pub const INJECT_LABEL: &str = "rolegate.dev/inject";
/// Annotation: comma-separated container names to leave alone.
pub const SKIP_ANNOTATION: &str = "rolegate.dev/skip-containers";
/// Annotation: the role to ask for, carried as `?role=` on the credentials URI.
pub const ROLE_ANNOTATION: &str = "rolegate.dev/role";
/// Annotation prefix: `rolegate.dev/role.<container>` gives that container its own role, over
/// the pod's `rolegate.dev/role` and its service account's.
pub const CONTAINER_ROLE_PREFIX: &str = "rolegate.dev/role.";
/// The variables of IRSA (web identity), which AWS SDKs try before container credentials.
pub const WEB_IDENTITY_VARIABLES: [&str; 2] = ["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"];
/// `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
pub const FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
/// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`.
pub const TOKEN_FILE: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";

/// What is injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The credentials endpoint the node agent serves.
    pub credentials_uri: String,
    /// Volume name of the projected token.
    pub volume: String,
    /// Directory the token volume is mounted at.
    pub mount_path: String,
    /// Token audience.
    pub audience: String,
    /// Token lifetime in seconds.
    pub expiration_seconds: i64,
}

impl Default for Injection {
    fn default() -> Self {
        Self {
            credentials_uri: "http://169.254.170.23/v1/credentials".into(),
            volume: "rolegate-token".into(),
            mount_path: "/var/run/secrets/rolegate.dev/serviceaccount".into(),
            audience: "rolegate".into(),
            expiration_seconds: 3600,
        }
    }
}

/// Why a pod is injected, or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A RoleMapping grants the pod's service account a role.
    Mapped(String),
    /// The pod opted in with the label.
    OptedIn,
    /// Neither.
    Skip(String),
}

/// PURE: whether `pod` in `namespace` is injected.
pub fn decide(pod: &Pod, namespace: &str, snapshot: &Snapshot) -> Decision {
    let opted_in = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECT_LABEL))
        .is_some_and(|v| v == "true");
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let subject = Subject::ServiceAccount {
        namespace,
        name: &sa,
    };
    let decision = policy::decide(&subject, &RequestContext::default(), snapshot);
    match decision.grants.first() {
        Some(g) => Decision::Mapped(g.mapping.clone()),
        None if opted_in => Decision::OptedIn,
        None => Decision::Skip(match decision.denials.first() {
            Some((mapping, denial)) => format!("RoleMapping {mapping} grants nothing: {denial}"),
            None => format!("no RoleMapping names service account {namespace}/{sa}"),
        }),
    }
}

fn add(path: &str, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::parse(path).unwrap_or_default(),
        value,
    })
}

fn container_ops(
    kind: &str,
    index: usize,
    container: &Container,
    injection: &Injection,
    uri: &str,
) -> Vec<PatchOperation> {
    let base = format!("/spec/{kind}/{index}");
    let mut ops = Vec::new();
    let token_file = format!("{}/token", injection.mount_path);
    let wanted = [(FULL_URI, uri.to_owned()), (TOKEN_FILE, token_file)];
    let env = container.env.as_deref().unwrap_or_default();
    let missing: Vec<Value> = wanted
        .iter()
        .filter(|(name, _)| !env.iter().any(|e| e.name == *name))
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    if container.env.is_none() && !missing.is_empty() {
        ops.push(add(&format!("{base}/env"), Value::Array(missing)));
    } else {
        ops.extend(
            missing
                .into_iter()
                .map(|v| add(&format!("{base}/env/-"), v)),
        );
    }
    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    let mounted = mounts
        .iter()
        .any(|m| m.name == injection.volume || m.mount_path == injection.mount_path);
    if !mounted {
        let mount =
            json!({"name": injection.volume, "mountPath": injection.mount_path, "readOnly": true});
        if container.volume_mounts.is_none() {
            ops.push(add(&format!("{base}/volumeMounts"), json!([mount])));
        } else {
            ops.push(add(&format!("{base}/volumeMounts/-"), mount));
        }
    }
    ops
}

/// The containers the webhook handles, in patch order: init containers (native sidecars among
/// them) then containers, with their JSON Pointer collection; those named by
/// `rolegate.dev/skip-containers` are left out.
fn handled(pod: &Pod) -> Vec<(&'static str, usize, &Container)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let annotations = pod.metadata.annotations.as_ref();
    let skipped: Vec<&str> = annotations
        .and_then(|a| a.get(SKIP_ANNOTATION))
        .map(|s| s.split(',').map(str::trim).collect())
        .unwrap_or_default();
    [
        ("initContainers", spec.init_containers.as_deref()),
        ("containers", Some(spec.containers.as_slice())),
    ]
    .into_iter()
    .flat_map(|(kind, containers)| {
        containers
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(move |(i, c)| (kind, i, c))
    })
    .filter(|(_, _, c)| !skipped.contains(&c.name.as_str()))
    .collect()
}

/// PURE: the role `container` asks for: its own `rolegate.dev/role.<container>`, else the pod's
/// `rolegate.dev/role`, else `service_account_role` (the same annotation on the service
/// account), else none (the server picks the only role granted).
pub fn role_for<'a>(
    pod: &'a Pod,
    container: &str,
    service_account_role: Option<&'a str>,
) -> Option<&'a str> {
    let annotations = pod.metadata.annotations.as_ref();
    annotations
        .and_then(|a| a.get(&format!("{CONTAINER_ROLE_PREFIX}{container}")))
        .or_else(|| annotations.and_then(|a| a.get(ROLE_ANNOTATION)))
        .map(String::as_str)
        .or(service_account_role)
}

/// PURE: the JSON Patch that injects `pod`. Empty when everything is already there. Each
/// container's credentials URI carries `?role=` from [`role_for`].
pub fn patch(
    pod: &Pod,
    injection: &Injection,
    service_account_role: Option<&str>,
) -> Vec<PatchOperation> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut ops = Vec::new();
    let mut touched = false;
    for (kind, i, c) in handled(pod) {
        let uri = match role_for(pod, &c.name, service_account_role) {
            Some(role) => format!("{}?role={}", injection.credentials_uri, url_escape(role)),
            None => injection.credentials_uri.clone(),
        };
        let container_ops = container_ops(kind, i, c, injection, &uri);
        touched |= !container_ops.is_empty();
        ops.extend(container_ops);
    }
    let has_volume = spec
        .volumes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|v| v.name == injection.volume);
    if touched && !has_volume {
        let volume = json!({"name": injection.volume, "projected": {"sources": [{"serviceAccountToken": {
            "audience": injection.audience, "expirationSeconds": injection.expiration_seconds, "path": "token"}}]}});
        // The volume goes first so that the mounts added after it refer to an existing volume.
        let op = if spec.volumes.is_none() {
            add("/spec/volumes", json!([volume]))
        } else {
            add("/spec/volumes/-", volume)
        };
        ops.insert(0, op);
    }
    ops
}

/// PURE: what the pod's author should know about an injected pod: a per-container role
/// annotation naming no container, and containers that also carry IRSA's variables (AWS SDKs
/// try web identity first, so those containers would get the IRSA role instead).
pub fn warnings(pod: &Pod) -> Vec<String> {
    let mut out = Vec::new();
    let names: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .map(|c| c.name.as_str())
        .collect();
    for key in pod.metadata.annotations.iter().flat_map(|a| a.keys()) {
        if let Some(container) = key.strip_prefix(CONTAINER_ROLE_PREFIX)
            && !names.contains(&container)
        {
            out.push(format!(
                "annotation {key} names no container of this pod (containers: {})",
                names.join(", ")
            ));
        }
    }
    for (_, _, c) in handled(pod) {
        let env = c.env.as_deref().unwrap_or_default();
        if let Some(variable) = WEB_IDENTITY_VARIABLES
            .iter()
            .find(|v| env.iter().any(|e| e.name == **v))
        {
            out.push(format!(
                "container {} also has {variable} (IRSA): AWS SDKs try web identity before container credentials, \
                 so it gets the IRSA role, not rolegate's; remove the eks.amazonaws.com/role-arn annotation from its service account",
                c.name
            ));
        }
    }
    out
}

/// PURE: why `pod`, already admitted, lacks the credentials it is granted: its service account
/// is mapped to a role (or it opted in), yet containers the webhook handles have no
/// `AWS_CONTAINER_CREDENTIALS_FULL_URI`. That is a pod admitted while the webhook was down or
/// skipped (`failurePolicy: Ignore`), or created before its RoleMapping. `None` for a pod that
/// is fine, not granted anything, finished or being deleted.
pub fn missed(pod: &Pod, namespace: &str, snapshot: &Snapshot) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some()
        || pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed")
    {
        return None;
    }
    let why = match decide(pod, namespace, snapshot) {
        Decision::Mapped(m) => format!("RoleMapping {m} grants its service account a role"),
        Decision::OptedIn => format!("it carries {INJECT_LABEL}: \"true\""),
        Decision::Skip(_) => return None,
    };
    let lacking: Vec<&str> = handled(pod)
        .into_iter()
        .filter(|(_, _, c)| {
            !c.env
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|e| e.name == FULL_URI)
        })
        .map(|(_, _, c)| c.name.as_str())
        .collect();
    if lacking.is_empty() {
        return None;
    }
    Some(format!(
        "{why}, but container(s) {} have no {FULL_URI}: the pod was admitted without the rolegate webhook \
         (down, or its selectors skipped the pod) or before the RoleMapping; delete the pod so that it is recreated with credentials",
        lacking.join(", ")
    ))
}

fn url_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' | b'/' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A review that cannot be answered: the body is not an `AdmissionReview` with a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed AdmissionReview: {0}")]
pub struct Malformed(pub String);

#[derive(Deserialize)]
struct Review {
    #[serde(rename = "apiVersion")]
    api_version: String,
    request: Option<Request>,
}

#[derive(Deserialize)]
struct Request {
    uid: String,
    namespace: Option<String>,
    object: Option<Value>,
}

/// PURE: the `AdmissionReview` answering `body`. Always allows (the webhook never blocks a pod);
/// the reason nothing was injected is in the response's warnings and the returned message.
///
/// # Errors
/// A body that is not an `admission.k8s.io/v1` AdmissionReview with a request and a uid.
pub fn review(
    body: &[u8],
    snapshot: &Snapshot,
    injection: &Injection,
) -> Result<(Value, String), Malformed> {
    let review: Review = serde_json::from_slice(body).map_err(|e| Malformed(e.to_string()))?;
    if review.api_version != "admission.k8s.io/v1" {
        return Err(Malformed(format!(
            "apiVersion {:?} is not admission.k8s.io/v1",
            review.api_version
        )));
    }
    let request = review
        .request
        .ok_or_else(|| Malformed("no request".into()))?;
    if request.uid.is_empty() {
        return Err(Malformed("request.uid is empty".into()));
    }
    // Pods nobody maps are the common case: they get no warning, only a debug log line.
    let allow = |message: String, patch: Option<(Vec<PatchOperation>, Vec<String>)>, warn: bool| {
        let mut response = json!({"uid": request.uid, "allowed": true});
        match patch {
            Some((ops, warnings)) => {
                if !ops.is_empty() {
                    let bytes = serde_json::to_vec(&ops).unwrap_or_default();
                    response["patchType"] = json!("JSONPatch");
                    response["patch"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(bytes));
                }
                if !warnings.is_empty() {
                    let shown: Vec<String> =
                        warnings.iter().map(|w| format!("rolegate: {w}")).collect();
                    response["warnings"] = json!(shown);
                }
            }
            None if warn => response["warnings"] = json!([format!("rolegate: {message}")]),
            None => {}
        }
        (
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
            message,
        )
    };
    let pod: Pod = match request.object.map(serde_json::from_value) {
        Some(Ok(pod)) => pod,
        Some(Err(e)) => {
            return Ok(allow(
                format!("request.object is not a Pod ({e}); nothing injected"),
                None,
                true,
            ));
        }
        None => {
            return Ok(allow(
                "the request has no object; nothing injected".into(),
                None,
                true,
            ));
        }
    };
    let namespace = request
        .namespace
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".into());
    Ok(match decide(&pod, &namespace, snapshot) {
        Decision::Skip(reason) => allow(format!("{reason}; nothing injected"), None, false),
        decision => {
            let sa = pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into());
            let sa_role = snapshot
                .service_account_roles
                .get(&(namespace.clone(), sa))
                .map(String::as_str);
            let ops = patch(&pod, injection, sa_role);
            let why = match decision {
                Decision::Mapped(m) => format!("RoleMapping {m}"),
                _ => format!("label {INJECT_LABEL}"),
            };
            let message = if ops.is_empty() {
                format!("already injected ({why})")
            } else {
                format!("injected ({why})")
            };
            allow(message, Some((ops, warnings(&pod))), false)
        }
    })
}
