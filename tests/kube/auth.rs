//! Authentication for the test API server: the service-account tokens it signs (TokenRequest),
//! the bearer tokens it accepts, and TokenReview, as the real kube-apiserver does them.
//!
//! Grounded in the Kubernetes documentation:
//! - "Managing Service Accounts" / "Service account tokens" (kubernetes.io/docs/reference/access-authn-authz/
//!   service-accounts-admin/): the claims of a bound token (`kubernetes.io` with namespace,
//!   serviceaccount, pod), that a bound token stops working when its pod or ServiceAccount is
//!   deleted, the user `system:serviceaccount:NS:NAME` and its groups.
//! - "TokenRequest" (kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-request-v1/):
//!   `audiences` (defaulting to the API server's), `expirationSeconds` (at least 10 minutes),
//!   `boundObjectRef` to a Pod or Secret whose uid must match when given.
//! - "TokenReview" (kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-review-v1/):
//!   `spec.audiences` empty means the API server's audience; `status.audiences` is the
//!   intersection of the review's and the token's audiences.
//! - "Authenticating" (kubernetes.io/docs/reference/access-authn-authz/authentication/): the
//!   `system:masters` group and `system:authenticated`.
//!
//! The messages follow kube-apiserver's own wording (pkg/serviceaccount/claims.go and jwt.go,
//! pkg/registry/core/serviceaccount/storage/token.go, pkg/apis/authentication/validation), so a
//! client sees what it would see in a cluster.
#![allow(dead_code)]

use std::collections::BTreeMap;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

/// The audience (and issuer) of a kubeadm or kind cluster's API server.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// Clock skew tolerated on `exp`, `nbf` and `iat`, as go-jose's `DefaultLeeway` in the real
/// validator, and how long before `now` a deletion must have happened to invalidate a token.
const LEEWAY_SECONDS: i64 = 60;

/// What the core store answers; the authenticator, the authorizer and admission read through it.
pub trait Lookup: Send + Sync {
    /// One object, or None if it does not exist.
    fn get(
        &self,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value>;
    /// Every object of a kind, in one namespace or (None) all of them / cluster-scoped ones.
    fn list(&self, group: &str, resource: &str, namespace: Option<&str>) -> Vec<Value>;
}

/// An authenticated user, as `authentication.k8s.io/v1` UserInfo.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
    pub uid: String,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// The user of the admin token: the `system:masters` group, which bypasses RBAC.
    pub fn admin() -> Self {
        User {
            name: "admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            uid: String::new(),
            extra: BTreeMap::new(),
        }
    }

    /// `authentication.k8s.io/v1` UserInfo JSON (TokenReview status.user, AdmissionRequest userInfo).
    pub fn user_info(&self) -> Value {
        let mut info = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            info["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            info["extra"] = json!(self.extra);
        }
        info
    }
}

/// A failed request: the HTTP code and the `Status` object the API server answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub code: u16,
    pub body: Value,
}

impl Status {
    /// A `Status` of `status: Failure` (API conventions, "Response Status Kind").
    pub fn new(code: u16, reason: &str, message: &str) -> Self {
        Status {
            code,
            body: json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code,
            }),
        }
    }

    /// The same with `details`.
    pub fn with_details(mut self, details: Value) -> Self {
        self.body["details"] = details;
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    /// 404 `<resource> "<name>" not found`, as apimachinery's `NewNotFound`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Status::new(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", qualified(group, resource)),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }

    /// 400 BadRequest.
    pub fn bad_request(message: &str) -> Self {
        Status::new(400, "BadRequest", message)
    }

    /// 500 `Internal error occurred: <err>`, as apimachinery's `NewInternalError`.
    pub fn internal(err: &str) -> Self {
        Status::new(
            500,
            "InternalError",
            &format!("Internal error occurred: {err}"),
        )
        .with_details(json!({"causes": [{"message": err}]}))
    }

    /// 422 Invalid for one field, as apimachinery's `NewInvalid`.
    pub fn invalid(kind: &str, group: &str, name: &str, field: &str, detail: &str) -> Self {
        let kind_group = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        Status::new(
            422,
            "Invalid",
            &format!("{kind_group} \"{name}\" is invalid: {field}: {detail}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": kind,
                             "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}]}))
    }
}

/// `resource.group`, or `resource` for the core group (apimachinery's `GroupResource.String`).
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

/// The signing key, the issuer and the admin token of one test API server.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    jwk: Value,
    admin: String,
    issuer: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The admin token is a credential: never printed.
        f.debug_struct("Tokens")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Default for Tokens {
    fn default() -> Self {
        Self::new()
    }
}

/// The private claims of a service-account token (`kubernetes.io`).
#[derive(Debug, Clone, serde::Deserialize)]
struct Private {
    namespace: String,
    serviceaccount: Ref,
    pod: Option<Ref>,
    secret: Option<Ref>,
    node: Option<Ref>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Ref {
    name: String,
    #[serde(default)]
    uid: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(default)]
    aud: Audiences,
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
    #[serde(default)]
    jti: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Private,
}

/// `aud` is a string or a list (RFC 7519 §4.1.3).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(untagged)]
enum Audiences {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

impl Audiences {
    fn into_vec(self) -> Vec<String> {
        match self {
            Audiences::One(a) => vec![a],
            Audiences::Many(v) => v,
            Audiences::None => Vec::new(),
        }
    }
}

/// A Go `%q` of a string slice: `["a" "b"]`, as the real error messages print audiences.
fn go_quoted(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", inner.join(" "))
}

/// A random UUID (v4 layout), for `jti` and admission request uids.
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    // Only fails if the OS has no randomness, when nothing here could work anyway.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// RFC 3339 in UTC with seconds, as `metav1.Time` serialises.
pub fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Seconds since the epoch of an RFC 3339 time.
fn parse_time(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// Whether `object` was deleted (has a `deletionTimestamp`) more than the leeway before `now`.
fn deleted_before_leeway(object: &Value, now: i64) -> bool {
    object["metadata"]["deletionTimestamp"]
        .as_str()
        .and_then(parse_time)
        .is_some_and(|t| t < now - LEEWAY_SECONDS)
}

fn uid_of(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap_or_default()
}

impl Tokens {
    /// A fresh ECDSA P-256 key (ES256, which kube-apiserver accepts for service-account
    /// signing keys) and a random admin token.
    pub fn new() -> Self {
        // Key generation with a working aws-lc-rs cannot fail; a test API server without a key
        // would be useless, so failing loudly here is the right outcome.
        #[allow(clippy::expect_used)]
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("generate the service-account signing key");
        #[allow(clippy::expect_used)]
        let encoding = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())
            .expect("load the service-account signing key");
        #[allow(clippy::expect_used)]
        let decoding = DecodingKey::from_ec_pem(key.public_key_pem().as_bytes())
            .expect("load the service-account verification key");
        let der = rcgen::PublicKeyData::subject_public_key_info(&key);
        // kube-apiserver's key id: base64url(SHA-256(DER SubjectPublicKeyInfo)).
        let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref());
        let raw = key.public_key_raw();
        let (x, y) = if raw.len() == 65 {
            (&raw[1..33], &raw[33..65])
        } else {
            (&raw[..0], &raw[..0])
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwk = json!({"use": "sig", "kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
                         "x": b64.encode(x), "y": b64.encode(y)});
        let mut admin = [0u8; 32];
        let _ = aws_lc_rs::rand::fill(&mut admin);
        Tokens {
            encoding,
            decoding,
            kid,
            jwk,
            admin: admin.iter().map(|b| format!("{b:02x}")).collect(),
            issuer: API_AUDIENCE.to_owned(),
        }
    }

    /// The bearer token of the `admin` user (group `system:masters`).
    pub fn admin_token(&self) -> String {
        self.admin.clone()
    }

    /// The API server's own audiences (`--api-audiences`, defaulting to the issuer).
    pub fn api_audience(&self) -> &str {
        &self.issuer
    }

    /// `iss` of the tokens this server signs.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `GET /openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }

    /// `GET /.well-known/openid-configuration`, as the ServiceAccountIssuerDiscovery feature.
    pub fn openid_configuration(&self, server_url: &str) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{server_url}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// A token shaped as kube-apiserver issues it: `iss`, `sub`, `aud`, `exp`, `iat`, `nbf`,
    /// `jti`, and `kubernetes.io` with the namespace, the ServiceAccount and (bound) the pod.
    #[allow(clippy::too_many_arguments)]
    pub fn service_account_token(
        &self,
        ns: &str,
        sa: &str,
        sa_uid: &str,
        audiences: &[String],
        ttl_seconds: i64,
        pod: Option<(&str, &str)>,
        now: i64,
    ) -> String {
        let mut kubernetes =
            json!({"namespace": ns, "serviceaccount": {"name": sa, "uid": sa_uid}});
        if let Some((name, uid)) = pod {
            kubernetes["pod"] = json!({"name": name, "uid": uid});
        }
        self.sign(ns, sa, audiences, ttl_seconds, kubernetes, now)
    }

    fn sign(
        &self,
        ns: &str,
        sa: &str,
        audiences: &[String],
        ttl_seconds: i64,
        kubernetes: Value,
        now: i64,
    ) -> String {
        let claims = json!({
            "aud": audiences,
            "exp": now + ttl_seconds,
            "iat": now,
            "iss": self.issuer,
            "jti": random_uuid(),
            "kubernetes.io": kubernetes,
            "nbf": now,
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
        });
        let mut header = Header::new(Algorithm::ES256);
        // go-jose writes only alg and kid.
        header.typ = None;
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap_or_default()
    }

    /// Bearer token -> user, or None (401). Checks signature, expiry, that the API server's
    /// audience is among the token's, and that the ServiceAccount (and the bound pod or secret)
    /// still exist with the uids in the token.
    pub fn authenticate(&self, lookup: &dyn Lookup, bearer: &str, now: i64) -> Option<User> {
        if !bearer.is_empty() && bearer == self.admin {
            return Some(User::admin());
        }
        self.verify(lookup, bearer, std::slice::from_ref(&self.issuer), now)
            .ok()
            .flatten()
            .map(|(user, _)| user)
    }

    /// The service-account authenticator: `Ok(None)` when the token is not one of ours (no
    /// opinion), `Err` with the real authenticator's message when it is ours but invalid.
    fn verify(
        &self,
        lookup: &dyn Lookup,
        token: &str,
        requested: &[String],
        now: i64,
    ) -> Result<Option<(User, Vec<String>)>, String> {
        // Not a JWT, or another issuer's: the real authenticator has no opinion.
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(None);
        };
        let Some(issuer) = unverified_issuer(token) else {
            return Ok(None);
        };
        if issuer != self.issuer {
            return Ok(None);
        }
        if header.alg != Algorithm::ES256 {
            return Err("square/go-jose: error in cryptographic primitive".into());
        }
        let mut validation = Validation::new(Algorithm::ES256);
        // Time and audience are checked below against the caller's clock and audiences.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = match jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation) {
            Ok(data) => data.claims,
            Err(e) => {
                return Err(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                        "square/go-jose: error in cryptographic primitive".into()
                    }
                    _ => "Token could not be validated.".into(),
                });
            }
        };
        if claims.iss != self.issuer {
            return Ok(None);
        }
        // go-jose's Claims.Validate: nbf and iat within the leeway, then expiry.
        if claims.nbf.is_some_and(|nbf| now + LEEWAY_SECONDS < nbf)
            || claims.iat.is_some_and(|iat| now + LEEWAY_SECONDS < iat)
        {
            return Err("Token could not be validated.".into());
        }
        if now - LEEWAY_SECONDS > claims.exp {
            return Err("Token has expired.".into());
        }
        let token_audiences = claims.aud.clone().into_vec();
        let audiences: Vec<String> = token_audiences
            .iter()
            .filter(|a| requested.contains(a))
            .cloned()
            .collect();
        if audiences.is_empty() {
            return Err(format!(
                "token audiences {} is invalid for the target audiences {}",
                go_quoted(&token_audiences),
                go_quoted(requested)
            ));
        }
        let k = &claims.kubernetes;
        let ns = k.namespace.as_str();
        let Some(sa) = lookup.get("", "serviceaccounts", Some(ns), &k.serviceaccount.name) else {
            return Err(format!(
                "serviceaccounts \"{}\" not found",
                k.serviceaccount.name
            ));
        };
        if deleted_before_leeway(&sa, now) {
            return Err(format!(
                "ServiceAccount {ns}/{} has been deleted",
                k.serviceaccount.name
            ));
        }
        if uid_of(&sa) != k.serviceaccount.uid {
            return Err(format!(
                "ServiceAccount UID ({}) does not match claim ({})",
                uid_of(&sa),
                k.serviceaccount.uid
            ));
        }
        if let Some(secret_ref) = &k.secret {
            match lookup.get("", "secrets", Some(ns), &secret_ref.name) {
                None => return Err("Token has been invalidated".into()),
                Some(s) if deleted_before_leeway(&s, now) => {
                    return Err("Token has been invalidated".into());
                }
                Some(s) if uid_of(&s) != secret_ref.uid => {
                    return Err(format!(
                        "Secret UID ({}) does not match claim ({})",
                        uid_of(&s),
                        secret_ref.uid
                    ));
                }
                Some(_) => {}
            }
        }
        let mut extra = BTreeMap::new();
        if let Some(pod_ref) = &k.pod {
            match lookup.get("", "pods", Some(ns), &pod_ref.name) {
                None => return Err("Token has been invalidated".into()),
                Some(p) if deleted_before_leeway(&p, now) => {
                    return Err("Token has been invalidated".into());
                }
                Some(p) if uid_of(&p) != pod_ref.uid => {
                    return Err(format!(
                        "Pod UID ({}) does not match claim ({})",
                        uid_of(&p),
                        pod_ref.uid
                    ));
                }
                Some(_) => {}
            }
            extra.insert(
                "authentication.kubernetes.io/pod-name".to_owned(),
                vec![pod_ref.name.clone()],
            );
            extra.insert(
                "authentication.kubernetes.io/pod-uid".to_owned(),
                vec![pod_ref.uid.clone()],
            );
        }
        if let Some(node) = &k.node {
            extra.insert(
                "authentication.kubernetes.io/node-name".to_owned(),
                vec![node.name.clone()],
            );
            if !node.uid.is_empty() {
                extra.insert(
                    "authentication.kubernetes.io/node-uid".to_owned(),
                    vec![node.uid.clone()],
                );
            }
        }
        if !claims.jti.is_empty() {
            extra.insert(
                "authentication.kubernetes.io/credential-id".to_owned(),
                vec![format!("JTI={}", claims.jti)],
            );
        }
        let user = User {
            name: claims.sub.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
            uid: k.serviceaccount.uid.clone(),
            extra,
        };
        Ok(Some((user, audiences)))
    }

    /// `POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token`: the TokenRequest answered,
    /// with `status.token` and `status.expirationTimestamp`.
    pub fn token_request(
        &self,
        lookup: &dyn Lookup,
        ns: &str,
        sa: &str,
        body: &Value,
        now: i64,
    ) -> Result<Value, Status> {
        if !body.is_object() {
            return Err(Status::bad_request("the body is not a TokenRequest object"));
        }
        if let Some(kind) = body["kind"].as_str()
            && kind != "TokenRequest"
        {
            return Err(Status::bad_request(&format!(
                "the kind of the body is {kind:?}, not \"TokenRequest\""
            )));
        }
        let spec = &body["spec"];
        // v1 defaulting: one hour.
        let expiration = match &spec["expirationSeconds"] {
            Value::Null => 3600,
            v => v.as_i64().ok_or_else(|| {
                Status::bad_request("spec.expirationSeconds: expected an integer")
            })?,
        };
        if expiration < 600 {
            return Err(Status::invalid(
                "TokenRequest",
                "authentication.k8s.io",
                sa,
                "spec.expirationSeconds",
                &format!(
                    "Invalid value: {expiration}: may not specify a duration less than 10 minutes"
                ),
            ));
        }
        if expiration > i64::from(u32::MAX) {
            return Err(Status::invalid(
                "TokenRequest",
                "authentication.k8s.io",
                sa,
                "spec.expirationSeconds",
                &format!("Too long: may not be more than {} bytes", u32::MAX),
            ));
        }
        let mut audiences: Vec<String> = match &spec["audiences"] {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|a| a.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| Status::bad_request("spec.audiences: expected strings"))?,
            _ => return Err(Status::bad_request("spec.audiences: expected a list")),
        };
        if audiences.is_empty() {
            audiences = vec![self.issuer.clone()];
        }
        let account = lookup
            .get("", "serviceaccounts", Some(ns), sa)
            .ok_or_else(|| Status::not_found("", "serviceaccounts", sa))?;
        let mut kubernetes =
            json!({"namespace": ns, "serviceaccount": {"name": sa, "uid": uid_of(&account)}});
        let bound = &spec["boundObjectRef"];
        if !bound.is_null() {
            let kind = bound["kind"].as_str().unwrap_or_default();
            let api_version = bound["apiVersion"].as_str().unwrap_or_default();
            let name = bound["name"].as_str().unwrap_or_default();
            let want_uid = bound["uid"].as_str().unwrap_or_default();
            let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
            let (object, claim) = match (group, kind) {
                ("", "Pod") => {
                    let pod = lookup
                        .get("", "pods", Some(ns), name)
                        .ok_or_else(|| Status::not_found("", "pods", name))?;
                    let runs_as = pod["spec"]["serviceAccountName"]
                        .as_str()
                        .unwrap_or("default");
                    if runs_as != sa {
                        return Err(Status::bad_request(&format!(
                            "cannot bind token for serviceaccount {sa:?} to pod running with serviceaccount {runs_as:?}"
                        )));
                    }
                    (pod, "pod")
                }
                ("", "Secret") => (
                    lookup
                        .get("", "secrets", Some(ns), name)
                        .ok_or_else(|| Status::not_found("", "secrets", name))?,
                    "secret",
                ),
                _ => {
                    let version = api_version.rsplit('/').next().unwrap_or_default();
                    return Err(Status::bad_request(&format!(
                        "cannot bind token to object of type {group}/{version}, Kind={kind}"
                    )));
                }
            };
            let uid = uid_of(&object);
            if !want_uid.is_empty() && want_uid != uid {
                return Err(Status::new(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {kind} {name:?}: the UID in the bound object reference ({want_uid}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
                    ),
                )
                .with_details(json!({"name": name, "kind": kind})));
            }
            kubernetes[claim] = json!({"name": name, "uid": uid});
            if claim == "pod"
                && let Some(node) = object["spec"]["nodeName"].as_str()
                && !node.is_empty()
            {
                let node_uid = lookup
                    .get("", "nodes", None, node)
                    .map(|n| uid_of(&n).to_owned())
                    .unwrap_or_default();
                kubernetes["node"] = json!({"name": node, "uid": node_uid});
            }
        }
        let token = self.sign(ns, sa, &audiences, expiration, kubernetes, now);
        let mut spec_out = json!({"audiences": audiences, "expirationSeconds": expiration});
        if !bound.is_null() {
            spec_out["boundObjectRef"] = bound.clone();
        }
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": sa, "namespace": ns, "creationTimestamp": rfc3339(now)},
            "spec": spec_out,
            "status": {"token": token, "expirationTimestamp": rfc3339(now + expiration)},
        }))
    }

    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`: the TokenReview answered, with
    /// `status.authenticated`, `status.user`, `status.audiences` and, when the token is
    /// refused, `status.error`.
    pub fn token_review(
        &self,
        lookup: &dyn Lookup,
        body: &Value,
        now: i64,
    ) -> Result<Value, Status> {
        let spec = &body["spec"];
        let token = spec["token"].as_str().unwrap_or_default();
        if token.is_empty() {
            return Err(Status::bad_request(
                "token is required for TokenReview in authentication",
            ));
        }
        let asked: Vec<String> = spec["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let requested = if asked.is_empty() {
            vec![self.issuer.clone()]
        } else {
            asked
        };
        let mut spec_out = json!({"token": token});
        if !spec["audiences"].is_null() {
            spec_out["audiences"] = spec["audiences"].clone();
        }
        let review = |status: Value| {
            json!({
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "spec": spec_out,
                "status": status,
            })
        };
        // The admin token is audience-agnostic: valid only where the API server's own audience is
        // asked for (apiserver's WrapAudienceAgnosticToken), and then reported with it.
        if token == self.admin {
            if requested.contains(&self.issuer) {
                return Ok(review(json!({
                    "authenticated": true,
                    "user": User::admin().user_info(),
                    "audiences": [self.issuer],
                })));
            }
            return Ok(review(json!({"user": {}})));
        }
        // TokenReview authenticates a request carrying the token (registry/authentication/
        // tokenreview). kube-apiserver's request authenticators then answer "invalid bearer token"
        // for a token none of them knows, and "[invalid bearer token, <reason>]" when the
        // service-account authenticator refuses one of its own (apimachinery's error aggregate,
        // which prints a repeated message once): the wording clients see in clusters.
        Ok(match self.verify(lookup, token, &requested, now) {
            Ok(Some((user, audiences))) => review(json!({
                "authenticated": true,
                "user": user.user_info(),
                "audiences": audiences,
            })),
            Ok(None) => review(json!({"user": {}, "error": "invalid bearer token"})),
            Err(e) => review(json!({"user": {}, "error": format!("[invalid bearer token, {e}]")})),
        })
    }
}

/// `iss` of a JWT, read before its signature is checked (only to decide whether the token is
/// ours, as the real authenticator's `hasCorrectIssuer`).
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["iss"].as_str().map(str::to_owned)
}
