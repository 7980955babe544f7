//! The test API server's authentication, RBAC and mutating admission, tested directly against a
//! small in-memory store: service-account tokens (audience, expiry, bound pod), TokenRequest and
//! TokenReview, the RBAC authorizer's decisions and its exact 403 messages, and admission webhooks
//! called over real HTTPS (a little axum webhook, and rolegate's own server); then the same through
//! the whole test API server over HTTPS with kube's own client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "kube/mod.rs"]
mod kube_server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kube_server::auth::{API_AUDIENCE, Lookup, Tokens, User};
use kube_server::rbac::{Attributes, authorize};
use serde_json::{Value, json};

/// The store the authenticator, authorizer and admission read: objects keyed by group,
/// resource, namespace and name.
#[derive(Default)]
struct Store(Mutex<Vec<Stored>>);

/// (group, resource, namespace, object).
type Stored = (String, String, Option<String>, Value);

impl Store {
    fn put(&self, group: &str, resource: &str, object: Value) {
        let ns = object["metadata"]["namespace"].as_str().map(str::to_owned);
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let mut all = self.0.lock().unwrap();
        all.retain(|(g, r, n, o)| {
            !(g == group && r == resource && *n == ns && o["metadata"]["name"] == name.as_str())
        });
        all.push((group.into(), resource.into(), ns, object));
    }
    fn remove(&self, group: &str, resource: &str, namespace: Option<&str>, name: &str) {
        self.0.lock().unwrap().retain(|(g, r, n, o)| {
            !(g == group
                && r == resource
                && n.as_deref() == namespace
                && o["metadata"]["name"] == name)
        });
    }
}

impl Lookup for Store {
    fn get(
        &self,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(g, r, n, o)| {
                g == group
                    && r == resource
                    && n.as_deref() == namespace
                    && o["metadata"]["name"] == name
            })
            .map(|(_, _, _, o)| o.clone())
    }
    fn list(&self, group: &str, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(g, r, n, _)| {
                g == group && r == resource && (namespace.is_none() || n.as_deref() == namespace)
            })
            .map(|(_, _, _, o)| o.clone())
            .collect()
    }
}

const NOW: i64 = 1_800_000_000;

fn service_account(store: &Store, ns: &str, name: &str, uid: &str) {
    store.put(
        "",
        "serviceaccounts",
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": ns, "uid": uid}}),
    );
}

fn pod(store: &Store, ns: &str, name: &str, uid: &str, sa: &str) {
    store.put("", "pods", json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid},
        "spec": {"serviceAccountName": sa, "nodeName": "node-1", "containers": [{"name": "app", "image": "app:1"}]}}));
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn review(tokens: &Tokens, store: &Store, token: &str, audiences: &[&str], now: i64) -> Value {
    let mut body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    if !audiences.is_empty() {
        body["spec"]["audiences"] = json!(audiences);
    }
    tokens.token_review(store, &body, now).unwrap()
}

fn request_token(
    tokens: &Tokens,
    store: &Store,
    spec: Value,
) -> Result<Value, kube_server::auth::Status> {
    tokens.token_request(
        store,
        "team-a",
        "app",
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
        NOW,
    )
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[test]
fn a_pod_bound_token_is_shaped_as_kubernetes_issues_it_and_dies_with_its_pod() {
    let tokens = Tokens::new();
    let store = Store::default();
    service_account(&store, "team-a", "app", "sa-uid-1");
    pod(&store, "team-a", "web-0", "pod-uid-1", "app");
    let answer = request_token(&tokens, &store, json!({
        "audiences": [API_AUDIENCE],
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-0", "uid": "pod-uid-1"}}))
    .unwrap();
    assert_eq!(answer["kind"], "TokenRequest");
    assert_eq!(
        answer["spec"]["expirationSeconds"], 3600,
        "v1 defaults to one hour"
    );
    assert_eq!(
        answer["status"]["expirationTimestamp"],
        kube_server::auth::rfc3339(NOW + 3600)
    );
    let token = answer["status"]["token"].as_str().unwrap();

    let c = claims(token);
    assert_eq!(c["iss"], API_AUDIENCE);
    assert_eq!(c["sub"], "system:serviceaccount:team-a:app");
    assert_eq!(c["aud"], json!([API_AUDIENCE]));
    assert_eq!(
        (c["iat"].as_i64(), c["nbf"].as_i64(), c["exp"].as_i64()),
        (Some(NOW), Some(NOW), Some(NOW + 3600))
    );
    assert_eq!(c["kubernetes.io"]["namespace"], "team-a");
    assert_eq!(
        c["kubernetes.io"]["serviceaccount"],
        json!({"name": "app", "uid": "sa-uid-1"})
    );
    assert_eq!(
        c["kubernetes.io"]["pod"],
        json!({"name": "web-0", "uid": "pod-uid-1"})
    );
    assert_eq!(c["kubernetes.io"]["node"]["name"], "node-1");
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(
        header["kid"],
        tokens.jwks()["keys"][0]["kid"],
        "the kid names the JWKS key"
    );

    let user = tokens
        .authenticate(&store, token, NOW + 10)
        .expect("a valid bound token");
    assert_eq!(user.name, "system:serviceaccount:team-a:app");
    assert_eq!(
        user.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:team-a",
            "system:authenticated"
        ]
    );
    assert_eq!(user.uid, "sa-uid-1");
    assert_eq!(
        user.extra["authentication.kubernetes.io/pod-name"],
        ["web-0"]
    );
    assert_eq!(
        user.extra["authentication.kubernetes.io/pod-uid"],
        ["pod-uid-1"]
    );

    // The pod is deleted: the token is dead, and TokenReview says why.
    store.remove("", "pods", Some("team-a"), "web-0");
    assert!(tokens.authenticate(&store, token, NOW + 20).is_none());
    let r = review(&tokens, &store, token, &[], NOW + 20);
    assert_eq!(r["status"]["authenticated"], Value::Null);
    assert_eq!(
        r["status"]["error"],
        "[invalid bearer token, Token has been invalidated]"
    );

    // A new pod of the same name is not the pod the token was bound to.
    pod(&store, "team-a", "web-0", "pod-uid-2", "app");
    assert!(tokens.authenticate(&store, token, NOW + 30).is_none());
    let r = review(&tokens, &store, token, &[], NOW + 30);
    assert_eq!(
        r["status"]["error"],
        "[invalid bearer token, Pod UID (pod-uid-2) does not match claim (pod-uid-1)]"
    );
}

#[test]
fn a_token_for_another_audience_is_no_api_credential_but_reviews_for_its_own() {
    let tokens = Tokens::new();
    let store = Store::default();
    service_account(&store, "team-a", "app", "sa-uid-1");
    let token = request_token(
        &tokens,
        &store,
        json!({"audiences": ["rolegate"], "expirationSeconds": 600}),
    )
    .unwrap()["status"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        tokens.authenticate(&store, &token, NOW).is_none(),
        "the API server is not among its audiences"
    );

    // spec.audiences empty means the API server's own audience: refused, with the reason.
    let r = review(&tokens, &store, &token, &[], NOW);
    assert_eq!(r["status"]["authenticated"], Value::Null);
    assert_eq!(
        r["status"]["error"],
        format!(
            "[invalid bearer token, token audiences [\"rolegate\"] is invalid for the target audiences [\"{API_AUDIENCE}\"]]"
        )
    );

    // Asked for its own audience (among others), it authenticates and reports the intersection.
    let r = review(&tokens, &store, &token, &["rolegate", "vault"], NOW);
    assert_eq!(r["status"]["authenticated"], true);
    assert_eq!(r["status"]["audiences"], json!(["rolegate"]));
    assert_eq!(
        r["status"]["user"]["username"],
        "system:serviceaccount:team-a:app"
    );
    assert_eq!(r["status"]["user"]["uid"], "sa-uid-1");
    assert_eq!(
        r["status"]["user"]["groups"][1],
        "system:serviceaccounts:team-a"
    );
}

#[test]
fn a_token_expires_after_its_lifetime_and_the_leeway() {
    let tokens = Tokens::new();
    let store = Store::default();
    service_account(&store, "team-a", "app", "sa-uid-1");
    let token = tokens.service_account_token(
        "team-a",
        "app",
        "sa-uid-1",
        &[API_AUDIENCE.into()],
        600,
        None,
        NOW,
    );
    assert!(tokens.authenticate(&store, &token, NOW + 600).is_some());
    assert!(
        tokens.authenticate(&store, &token, NOW + 660).is_some(),
        "60 s of clock skew are tolerated"
    );
    assert!(tokens.authenticate(&store, &token, NOW + 661).is_none());
    assert_eq!(
        review(&tokens, &store, &token, &[], NOW + 661)["status"]["error"],
        "[invalid bearer token, Token has expired.]"
    );
    // Not yet valid (issued in the future beyond the leeway).
    assert!(tokens.authenticate(&store, &token, NOW - 61).is_none());
}

#[test]
fn a_token_outlives_neither_its_service_account_nor_a_forged_signature() {
    let tokens = Tokens::new();
    let store = Store::default();
    service_account(&store, "team-a", "app", "sa-uid-1");
    let token = tokens.service_account_token(
        "team-a",
        "app",
        "sa-uid-1",
        &[API_AUDIENCE.into()],
        3600,
        None,
        NOW,
    );
    assert!(tokens.authenticate(&store, &token, NOW).is_some());
    service_account(&store, "team-a", "app", "sa-uid-2");
    assert!(tokens.authenticate(&store, &token, NOW).is_none());
    assert_eq!(
        review(&tokens, &store, &token, &[], NOW)["status"]["error"],
        "[invalid bearer token, ServiceAccount UID (sa-uid-2) does not match claim (sa-uid-1)]"
    );
    store.remove("", "serviceaccounts", Some("team-a"), "app");
    assert_eq!(
        review(&tokens, &store, &token, &[], NOW)["status"]["error"],
        "[invalid bearer token, serviceaccounts \"app\" not found]"
    );

    // Same issuer, same claims, another key: refused.
    service_account(&store, "team-a", "app", "sa-uid-1");
    let forged = Tokens::new().service_account_token(
        "team-a",
        "app",
        "sa-uid-1",
        &[API_AUDIENCE.into()],
        3600,
        None,
        NOW,
    );
    assert!(tokens.authenticate(&store, &forged, NOW).is_none());
    assert_eq!(
        review(&tokens, &store, &forged, &[], NOW)["status"]["authenticated"],
        Value::Null
    );
    // Garbage is nobody's token.
    assert!(tokens.authenticate(&store, "not-a-token", NOW).is_none());
    assert_eq!(
        review(&tokens, &store, "not-a-token", &[], NOW)["status"]["error"],
        "invalid bearer token"
    );
    assert!(tokens.authenticate(&store, "", NOW).is_none());
}

#[test]
fn the_admin_token_is_system_masters_and_only_for_the_api_audience() {
    let tokens = Tokens::new();
    let store = Store::default();
    let admin = tokens
        .authenticate(&store, &tokens.admin_token(), NOW)
        .unwrap();
    assert_eq!(admin.name, "admin");
    assert!(admin.groups.contains(&"system:masters".to_owned()));
    let r = review(&tokens, &store, &tokens.admin_token(), &[], NOW);
    assert_eq!(r["status"]["authenticated"], true);
    assert_eq!(r["status"]["audiences"], json!([API_AUDIENCE]));
    let r = review(&tokens, &store, &tokens.admin_token(), &["rolegate"], NOW);
    assert_eq!(
        r["status"]["authenticated"],
        Value::Null,
        "an audience-agnostic token is no rolegate token"
    );
    let empty = tokens
        .token_review(&store, &json!({"spec": {"token": ""}}), NOW)
        .unwrap_err();
    assert_eq!(
        (empty.code, empty.message()),
        (400, "token is required for TokenReview in authentication")
    );
    assert!(
        !format!("{tokens:?}").contains(&tokens.admin_token()),
        "the admin token is never printed"
    );
}

#[test]
fn token_requests_are_validated_as_the_real_api_server_does() {
    let tokens = Tokens::new();
    let store = Store::default();
    let missing = request_token(&tokens, &store, json!({"audiences": ["rolegate"]})).unwrap_err();
    assert_eq!(
        (missing.code, missing.message()),
        (404, "serviceaccounts \"app\" not found")
    );

    service_account(&store, "team-a", "app", "sa-uid-1");
    pod(&store, "team-a", "web-0", "pod-uid-1", "app");
    pod(&store, "team-a", "other-0", "pod-uid-9", "other");
    let short = request_token(
        &tokens,
        &store,
        json!({"audiences": ["rolegate"], "expirationSeconds": 599}),
    )
    .unwrap_err();
    assert_eq!(short.code, 422);
    assert_eq!(
        short.message(),
        "TokenRequest.authentication.k8s.io \"app\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
    );
    assert_eq!(short.body["reason"], "Invalid");

    let no_pod = request_token(
        &tokens,
        &store,
        json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "gone"}}),
    )
    .unwrap_err();
    assert_eq!(
        (no_pod.code, no_pod.message()),
        (404, "pods \"gone\" not found")
    );
    let wrong_sa = request_token(
        &tokens,
        &store,
        json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "other-0"}}),
    )
    .unwrap_err();
    assert_eq!(
        (wrong_sa.code, wrong_sa.message()),
        (
            400,
            "cannot bind token for serviceaccount \"app\" to pod running with serviceaccount \"other\""
        )
    );
    let stale = request_token(&tokens, &store, json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-0", "uid": "old"}})).unwrap_err();
    assert_eq!(stale.code, 409);
    assert!(stale.message().starts_with("Operation cannot be fulfilled on Pod \"web-0\": the UID in the bound object reference (old) does not match the UID in record (pod-uid-1)"));
    let odd = request_token(
        &tokens,
        &store,
        json!({"boundObjectRef": {"apiVersion": "v1", "kind": "ConfigMap", "name": "x"}}),
    )
    .unwrap_err();
    assert_eq!(
        (odd.code, odd.message()),
        (
            400,
            "cannot bind token to object of type /v1, Kind=ConfigMap"
        )
    );

    // No audiences: the API server's own; the token then works for API access.
    let answer = request_token(&tokens, &store, json!({"expirationSeconds": 7200})).unwrap();
    assert_eq!(answer["spec"]["audiences"], json!([API_AUDIENCE]));
    let token = answer["status"]["token"].as_str().unwrap();
    assert_eq!(claims(token)["exp"], NOW + 7200);
    assert!(tokens.authenticate(&store, token, NOW).is_some());
}

// ---------------------------------------------------------------------------------------------
// RBAC

const CONTROLLER: &str = "system:serviceaccount:rolegate:rolegate-controller";

fn sa_user(ns: &str, name: &str) -> User {
    User {
        name: format!("system:serviceaccount:{ns}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        ..User::default()
    }
}

fn rbac_store() -> Store {
    let store = Store::default();
    let g = kube_server::rbac::GROUP;
    store.put(g, "clusterroles", json!({"kind": "ClusterRole", "metadata": {"name": "rolegate-controller"}, "rules": [
        {"apiGroups": ["rolegate.dev"], "resources": ["samlapps", "iamproviders"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["rolegate.dev"], "resources": ["samlapps/status"], "verbs": ["update", "patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["rolegate-signing"], "verbs": ["get", "watch", "update"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"], "verbs": ["*"]},
        {"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]},
    ]}));
    store.put(g, "clusterrolebindings", json!({"kind": "ClusterRoleBinding", "metadata": {"name": "rolegate-controller"},
        "roleRef": {"apiGroup": g, "kind": "ClusterRole", "name": "rolegate-controller"},
        "subjects": [{"kind": "ServiceAccount", "name": "rolegate-controller", "namespace": "rolegate"}]}));
    store.put(g, "roles", json!({"kind": "Role", "metadata": {"name": "leader", "namespace": "rolegate"}, "rules": [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["rolegate-controller"], "verbs": ["get", "update"]},
    ]}));
    store.put(
        g,
        "rolebindings",
        json!({"kind": "RoleBinding", "metadata": {"name": "leader", "namespace": "rolegate"},
        "roleRef": {"apiGroup": g, "kind": "Role", "name": "leader"},
        // No namespace on the subject: the RoleBinding's own.
        "subjects": [{"kind": "ServiceAccount", "name": "rolegate-controller"}]}),
    );
    // A ClusterRole granted in one namespace only, to every ServiceAccount of team-a.
    store.put(
        g,
        "clusterroles",
        json!({"kind": "ClusterRole", "metadata": {"name": "configmap-reader"}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}),
    );
    store.put(g, "rolebindings", json!({"kind": "RoleBinding", "metadata": {"name": "readers", "namespace": "team-a"},
        "roleRef": {"apiGroup": g, "kind": "ClusterRole", "name": "configmap-reader"},
        "subjects": [{"kind": "Group", "name": "system:serviceaccounts:team-a"}, {"kind": "User", "name": "alice"}]}));
    store
}

fn res(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    Attributes::resource(verb, group, resource, ns, name)
}

#[test]
fn rbac_allows_by_verb_group_resource_and_subresource_and_names_the_rule() {
    let store = rbac_store();
    let controller = sa_user("rolegate", "rolegate-controller");
    let ok = |a: Attributes| authorize(&store, &controller, &a).unwrap();
    assert_eq!(
        ok(res("list", "rolegate.dev", "samlapps", "", "")),
        "ClusterRole/rolegate-controller rule 0 via ClusterRoleBinding/rolegate-controller"
    );
    assert_eq!(
        ok(res("watch", "rolegate.dev", "iamproviders", "team-a", "")),
        "ClusterRole/rolegate-controller rule 0 via ClusterRoleBinding/rolegate-controller"
    );
    assert_eq!(
        ok(res("patch", "rolegate.dev", "samlapps/status", "", "aws")),
        "ClusterRole/rolegate-controller rule 1 via ClusterRoleBinding/rolegate-controller"
    );
    assert_eq!(
        ok(res(
            "delete",
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "",
            "rolegate"
        )),
        "ClusterRole/rolegate-controller rule 4 via ClusterRoleBinding/rolegate-controller"
    );
    assert_eq!(
        ok(res("get", "apps", "deployments/scale", "team-a", "web")),
        "ClusterRole/rolegate-controller rule 5 via ClusterRoleBinding/rolegate-controller"
    );
    assert_eq!(
        ok(res(
            "create",
            "coordination.k8s.io",
            "leases",
            "rolegate",
            ""
        )),
        "Role/rolegate/leader rule 0 via RoleBinding/rolegate/leader"
    );
    assert_eq!(
        ok(res(
            "update",
            "coordination.k8s.io",
            "leases",
            "rolegate",
            "rolegate-controller"
        )),
        "Role/rolegate/leader rule 1 via RoleBinding/rolegate/leader"
    );

    // The status subresource is not the object, and the object is not its status.
    let deny = |a: Attributes| authorize(&store, &controller, &a).unwrap_err();
    assert_eq!(
        deny(res("update", "rolegate.dev", "samlapps", "", "aws")),
        format!(
            "samlapps.rolegate.dev \"aws\" is forbidden: User \"{CONTROLLER}\" cannot update resource \"samlapps\" in API group \"rolegate.dev\" at the cluster scope"
        )
    );
    assert_eq!(
        deny(res("get", "rolegate.dev", "samlapps/status", "", "aws")),
        format!(
            "samlapps.rolegate.dev \"aws\" is forbidden: User \"{CONTROLLER}\" cannot get resource \"samlapps/status\" in API group \"rolegate.dev\" at the cluster scope"
        )
    );
    // `*/scale` is a subresource of anything, not the resource itself.
    assert!(
        authorize(
            &store,
            &controller,
            &res("get", "apps", "deployments", "team-a", "web")
        )
        .is_err()
    );
    // A verb the rule does not list.
    assert!(
        authorize(
            &store,
            &controller,
            &res("delete", "rolegate.dev", "samlapps", "", "aws")
        )
        .is_err()
    );
    // Another API group of the same resource name.
    assert!(
        authorize(
            &store,
            &controller,
            &res("list", "other.dev", "samlapps", "", "")
        )
        .is_err()
    );
}

#[test]
fn resource_names_never_match_a_list_a_watch_or_a_create_without_a_name() {
    let store = rbac_store();
    let controller = sa_user("rolegate", "rolegate-controller");
    assert_eq!(
        authorize(
            &store,
            &controller,
            &res("get", "", "secrets", "rolegate", "rolegate-signing")
        )
        .unwrap(),
        "ClusterRole/rolegate-controller rule 2 via ClusterRoleBinding/rolegate-controller"
    );
    assert_eq!(
        authorize(
            &store,
            &controller,
            &res("get", "", "secrets", "rolegate", "x")
        )
        .unwrap_err(),
        format!(
            "secrets \"x\" is forbidden: User \"{CONTROLLER}\" cannot get resource \"secrets\" in API group \"\" in the namespace \"rolegate\""
        )
    );
    assert_eq!(
        authorize(
            &store,
            &controller,
            &res("list", "", "secrets", "rolegate", "")
        )
        .unwrap_err(),
        format!(
            "secrets is forbidden: User \"{CONTROLLER}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"rolegate\""
        )
    );
    assert!(
        authorize(
            &store,
            &controller,
            &res("watch", "", "secrets", "rolegate", "")
        )
        .is_err()
    );
    // A watch with fieldSelector=metadata.name=rolegate-signing carries the name.
    assert!(
        authorize(
            &store,
            &controller,
            &res("watch", "", "secrets", "rolegate", "rolegate-signing")
        )
        .is_ok()
    );
    // create names no existing object; the Role's create rule has no resourceNames.
    assert!(
        authorize(
            &store,
            &controller,
            &res("create", "", "secrets", "rolegate", "")
        )
        .is_err()
    );
    // get on the lease of another name.
    assert!(
        authorize(
            &store,
            &controller,
            &res("get", "coordination.k8s.io", "leases", "rolegate", "other")
        )
        .is_err()
    );
}

#[test]
fn a_role_binding_grants_only_in_its_own_namespace() {
    let store = rbac_store();
    let controller = sa_user("rolegate", "rolegate-controller");
    assert_eq!(
        authorize(
            &store,
            &controller,
            &res(
                "update",
                "coordination.k8s.io",
                "leases",
                "team-a",
                "rolegate-controller"
            )
        )
        .unwrap_err(),
        format!(
            "leases.coordination.k8s.io \"rolegate-controller\" is forbidden: User \"{CONTROLLER}\" cannot update resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"team-a\""
        )
    );
    // A ClusterRole through a RoleBinding: in team-a only, to the group and the user named.
    let app = sa_user("team-a", "app");
    assert_eq!(
        authorize(&store, &app, &res("list", "", "configmaps", "team-a", "")).unwrap(),
        "ClusterRole/configmap-reader rule 0 via RoleBinding/team-a/readers"
    );
    assert!(authorize(&store, &app, &res("list", "", "configmaps", "team-b", "")).is_err());
    assert!(
        authorize(&store, &app, &res("list", "", "configmaps", "", "")).is_err(),
        "not cluster-wide"
    );
    let alice = User {
        name: "alice".into(),
        groups: vec!["system:authenticated".into()],
        ..User::default()
    };
    assert!(authorize(&store, &alice, &res("get", "", "configmaps", "team-a", "c")).is_ok());
    let bob = User {
        name: "bob".into(),
        groups: vec!["system:authenticated".into()],
        ..User::default()
    };
    assert!(authorize(&store, &bob, &res("get", "", "configmaps", "team-a", "c")).is_err());
    // The same ServiceAccount name in another namespace is another subject.
    let impostor = sa_user("team-a", "rolegate-controller");
    assert!(
        authorize(
            &store,
            &impostor,
            &res("list", "rolegate.dev", "samlapps", "", "")
        )
        .is_err()
    );
    // Cluster-scoped denial wording.
    assert_eq!(
        authorize(&store, &app, &res("get", "", "namespaces", "", "team-a")).unwrap_err(),
        "namespaces \"team-a\" is forbidden: User \"system:serviceaccount:team-a:app\" cannot get resource \"namespaces\" in API group \"\" at the cluster scope"
    );
}

#[test]
fn every_authenticated_user_may_discover_the_api_as_in_a_real_cluster() {
    let store = rbac_store();
    let app = sa_user("team-a", "app");
    for path in [
        "/api",
        "/api/v1",
        "/apis",
        "/apis/rolegate.dev/v1alpha1",
        "/openapi/v3",
        "/openapi/v3/apis/rolegate.dev/v1alpha1",
        "/version",
    ] {
        assert_eq!(
            authorize(&store, &app, &Attributes::non_resource("get", path)).unwrap(),
            "ClusterRole/system:discovery rule 0 via ClusterRoleBinding/system:discovery",
            "{path}"
        );
    }
    assert_eq!(
        authorize(
            &store,
            &app,
            &res(
                "create",
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "",
                ""
            )
        )
        .unwrap(),
        "ClusterRole/system:basic-user rule 1 via ClusterRoleBinding/system:basic-user"
    );
    assert_eq!(
        authorize(&store, &app, &Attributes::non_resource("get", "/metrics")).unwrap_err(),
        "forbidden: User \"system:serviceaccount:team-a:app\" cannot get path \"/metrics\""
    );
    assert!(
        authorize(&store, &app, &Attributes::non_resource("post", "/api")).is_err(),
        "discovery is read-only"
    );
    // Unauthenticated callers get only the public info.
    let anonymous = User {
        name: "system:anonymous".into(),
        groups: vec!["system:unauthenticated".into()],
        ..User::default()
    };
    assert!(
        authorize(
            &store,
            &anonymous,
            &Attributes::non_resource("get", "/version")
        )
        .is_ok()
    );
    assert!(
        authorize(
            &store,
            &anonymous,
            &Attributes::non_resource("get", "/apis")
        )
        .is_err()
    );
    // system:masters is allowed everything.
    assert_eq!(
        authorize(
            &store,
            &User::admin(),
            &res("delete", "", "secrets", "kube-system", "x")
        )
        .unwrap(),
        "group system:masters"
    );
}

#[test]
fn a_binding_to_a_missing_role_is_reported_in_the_denial() {
    let store = rbac_store();
    let g = kube_server::rbac::GROUP;
    store.put(
        g,
        "clusterrolebindings",
        json!({"kind": "ClusterRoleBinding", "metadata": {"name": "dangling"},
        "roleRef": {"apiGroup": g, "kind": "ClusterRole", "name": "gone"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "team-a"}]}),
    );
    assert_eq!(
        authorize(
            &store,
            &sa_user("team-a", "app"),
            &res("get", "", "pods", "team-a", "web")
        )
        .unwrap_err(),
        "pods \"web\" is forbidden: User \"system:serviceaccount:team-a:app\" cannot get resource \"pods\" in API group \"\" in the namespace \"team-a\": RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found"
    );
    // The 403 Status as the API server sends it.
    let a = res("get", "", "pods", "team-a", "web");
    let status = kube_server::rbac::forbidden(&a, "m");
    assert_eq!(status.code, 403);
    assert_eq!(status.body["reason"], "Forbidden");
    assert_eq!(
        status.body["details"],
        json!({"name": "web", "group": "", "kind": "pods"})
    );
}

#[test]
fn owner_references_with_block_owner_deletion_need_update_on_the_owners_finalizers() {
    use kube_server::rbac::owner_references_permission;
    let store = rbac_store();
    let g = kube_server::rbac::GROUP;
    store.put(
        g,
        "clusterroles",
        json!({"kind": "ClusterRole", "metadata": {"name": "secret-writer"}, "rules": [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "update"]}]}),
    );
    store.put(g, "clusterrolebindings", json!({"kind": "ClusterRoleBinding", "metadata": {"name": "secret-writer"},
        "roleRef": {"apiGroup": g, "kind": "ClusterRole", "name": "secret-writer"},
        "subjects": [{"kind": "ServiceAccount", "name": "rolegate-controller", "namespace": "rolegate"}]}));
    let controller = sa_user("rolegate", "rolegate-controller");
    let resolve = |api_version: &str, kind: &str| match (api_version, kind) {
        ("rolegate.dev/v1alpha1", "IAMProvider") => {
            Some(("rolegate.dev".to_owned(), "iamproviders".to_owned(), false))
        }
        _ => None,
    };
    let secret = |block: bool| {
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "prod-metadata", "namespace": "rolegate", "ownerReferences": [
            {"apiVersion": "rolegate.dev/v1alpha1", "kind": "IAMProvider", "name": "prod", "uid": "u-1",
             "controller": true, "blockOwnerDeletion": block}]}})
    };
    let create = res("create", "", "secrets", "rolegate", "prod-metadata");
    let refused =
        owner_references_permission(&store, &controller, &create, None, &secret(true), &resolve)
            .unwrap_err();
    assert_eq!(refused.code, 403);
    assert_eq!(
        refused.message(),
        "secrets \"prod-metadata\" is forbidden: cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on: , <nil>"
    );
    // Without blockOwnerDeletion nothing more is needed on create.
    assert_eq!(
        owner_references_permission(&store, &controller, &create, None, &secret(false), &resolve)
            .unwrap(),
        Vec::<String>::new()
    );

    store.put(g, "clusterroles", json!({"kind": "ClusterRole", "metadata": {"name": "secret-writer"}, "rules": [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "update"]},
        {"apiGroups": ["rolegate.dev"], "resources": ["iamproviders/finalizers"], "verbs": ["update"]}]}));
    assert_eq!(
        owner_references_permission(&store, &controller, &create, None, &secret(true), &resolve)
            .unwrap(),
        ["ClusterRole/secret-writer rule 1 via ClusterRoleBinding/secret-writer"]
    );
    // An update that changes the references needs delete on the object itself.
    let update = res("update", "", "secrets", "rolegate", "prod-metadata");
    let refused = owner_references_permission(
        &store,
        &controller,
        &update,
        Some(&secret(false)),
        &secret(true),
        &resolve,
    )
    .unwrap_err();
    assert_eq!(
        refused.message(),
        "secrets \"prod-metadata\" is forbidden: cannot set an ownerRef on a resource you can't delete: , <nil>"
    );
    // An update that leaves them alone needs nothing.
    assert!(
        owner_references_permission(
            &store,
            &controller,
            &update,
            Some(&secret(true)),
            &secret(true),
            &resolve
        )
        .unwrap()
        .is_empty()
    );
    // An owner kind the server does not know.
    let mut odd = secret(true);
    odd["metadata"]["ownerReferences"][0]["kind"] = json!("Gadget");
    assert!(
        owner_references_permission(&store, &controller, &create, None, &odd, &resolve)
            .unwrap_err()
            .message()
            .contains("cannot find RESTMapping for APIVersion rolegate.dev/v1alpha1 Kind Gadget")
    );
}

// ---------------------------------------------------------------------------------------------
// Mutating admission, over real HTTPS

/// A little HTTPS webhook: what each path answers, and every review it received.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, String, Value)>>>);

impl Received {
    fn calls(&self, path: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .count()
    }
    fn all(&self) -> Vec<(String, String, Value)> {
        self.0.lock().unwrap().clone()
    }
}

async fn hook_handler(
    axum::extract::State(received): axum::extract::State<Received>,
    uri: axum::http::Uri,
    axum::Json(review): axum::Json<Value>,
) -> axum::Json<Value> {
    let path = uri.path().to_owned();
    received.0.lock().unwrap().push((
        path.clone(),
        uri.query().unwrap_or_default().to_owned(),
        review.clone(),
    ));
    let uid = review["request"]["uid"].clone();
    let allow = |extra: Value| {
        let mut response = json!({"uid": uid, "allowed": true});
        for (k, v) in extra.as_object().unwrap() {
            response[k] = v.clone();
        }
        axum::Json(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
        )
    };
    if let Some(key) = path.strip_prefix("/label/") {
        let mut ops = Vec::new();
        if review["request"]["object"]["metadata"]["labels"].is_null() {
            ops.push(json!({"op": "add", "path": "/metadata/labels", "value": {}}));
        }
        ops.push(json!({"op": "add", "path": format!("/metadata/labels/{key}"), "value": "yes"}));
        let patch =
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&ops).unwrap());
        return allow(
            json!({"patchType": "JSONPatch", "patch": patch, "warnings": [format!("labelled {key}")]}),
        );
    }
    match path.as_str() {
        "/deny" => axum::Json(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": false, "status": {"code": 403, "message": "no pods today"}}}),
        ),
        "/sleep" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            allow(json!({}))
        }
        "/wrong-uid" => axum::Json(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "not-the-request", "allowed": true}}),
        ),
        _ => allow(json!({})),
    }
}

/// A CA and a webhook serving a certificate it signed for `hooks.webhooks.svc`.
struct Webhook {
    addr: SocketAddr,
    ca_bundle: String,
    received: Received,
}

async fn start_webhook() -> Webhook {
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
    let ca = rolegate::pki::new_ca(now, "webhook test CA").unwrap();
    let serving = rolegate::pki::issue_serving(&ca, &["hooks.webhooks.svc".into()], now).unwrap();
    let received = Received::default();
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::post(hook_handler))
        .with_state(received.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        serving.cert_pem.into_bytes(),
        serving.key_pem.into_bytes(),
    )
    .await
    .unwrap();
    tokio::spawn(async move {
        axum_server::tls_rustls::from_tcp_rustls(listener, config)
            .unwrap()
            .serve(app.into_make_service())
            .await
            .unwrap();
    });
    Webhook {
        addr,
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(ca.cert_pem),
        received,
    }
}

fn services(addr: SocketAddr) -> HashMap<(String, String, u16), SocketAddr> {
    HashMap::from([
        (("webhooks".to_owned(), "hooks".to_owned(), 443), addr),
        // Same socket, another Service name: the certificate does not name it.
        (("webhooks".to_owned(), "elsewhere".to_owned(), 443), addr),
    ])
}

fn hook(name: &str, path: &str, ca_bundle: &str) -> Value {
    json!({
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "clientConfig": {"service": {"namespace": "webhooks", "name": "hooks", "path": path}, "caBundle": ca_bundle},
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
    })
}

fn configuration(store: &Store, name: &str, hooks: Vec<Value>) {
    store.put(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name}, "webhooks": hooks}),
    );
}

fn namespace(store: &Store, name: &str, labels: Value) {
    store.put("", "namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}));
}

fn new_pod(ns: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web-0", "namespace": ns, "labels": labels},
           "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "app:1"}]}})
}

async fn admit(
    store: &Store,
    webhook: &Webhook,
    pod: Value,
    dry_run: bool,
) -> Result<(Value, Vec<String>), kube_server::auth::Status> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap().to_owned();
    kube_server::admission::mutate(
        store,
        &services(webhook.addr),
        "CREATE",
        ("", "v1", "pods"),
        &ns,
        pod,
        &sa_user("team-a", "deployer"),
        dry_run,
    )
    .await
}

#[tokio::test]
async fn a_webhook_trusted_through_its_ca_bundle_mutates_the_pod_and_sees_a_real_admission_review()
{
    let webhook = start_webhook().await;
    let store = Store::default();
    namespace(&store, "team-a", json!({}));
    configuration(
        &store,
        "labels",
        vec![hook("label.test.dev", "/label/a", &webhook.ca_bundle)],
    );
    let (pod, warnings) = admit(
        &store,
        &webhook,
        new_pod("team-a", json!({"app": "web"})),
        false,
    )
    .await
    .unwrap();
    assert_eq!(pod["metadata"]["labels"], json!({"app": "web", "a": "yes"}));
    assert_eq!(warnings, ["labelled a"]);

    let calls = webhook.received.all();
    assert_eq!(calls.len(), 1);
    let (path, query, review) = &calls[0];
    assert_eq!(
        (path.as_str(), query.as_str()),
        ("/label/a", "timeout=10s"),
        "timeoutSeconds defaults to 10"
    );
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    let request = &review["request"];
    assert_eq!(request["uid"].as_str().unwrap().len(), 36);
    assert_eq!(
        request["kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    assert_eq!(
        request["resource"],
        json!({"group": "", "version": "v1", "resource": "pods"})
    );
    assert_eq!(request["requestKind"], request["kind"]);
    assert_eq!(
        (
            request["namespace"].as_str(),
            request["name"].as_str(),
            request["operation"].as_str()
        ),
        (Some("team-a"), Some("web-0"), Some("CREATE"))
    );
    assert_eq!(
        request["userInfo"]["username"],
        "system:serviceaccount:team-a:deployer"
    );
    assert_eq!(
        request["object"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    assert_eq!(request["dryRun"], false);
    assert_eq!(
        request["options"],
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"})
    );
}

#[tokio::test]
async fn a_wrong_ca_bundle_is_refused_under_fail_and_admits_unmutated_under_ignore() {
    let webhook = start_webhook().await;
    let other_ca = rolegate::pki::new_ca(jiff::Timestamp::now(), "someone else").unwrap();
    let wrong = base64::engine::general_purpose::STANDARD.encode(other_ca.cert_pem);
    let store = Store::default();
    namespace(&store, "team-a", json!({}));
    configuration(
        &store,
        "labels",
        vec![hook("label.test.dev", "/label/a", &wrong)],
    );
    let refused = admit(&store, &webhook, new_pod("team-a", json!({})), false)
        .await
        .unwrap_err();
    assert_eq!(refused.code, 500);
    assert_eq!(refused.body["reason"], "InternalError");
    assert_eq!(
        refused.message(),
        "Internal error occurred: failed calling webhook \"label.test.dev\": failed to call webhook: Post \"https://hooks.webhooks.svc:443/label/a?timeout=10s\": tls: failed to verify certificate: x509: certificate signed by unknown authority"
    );
    assert_eq!(
        webhook.received.calls("/label/a"),
        0,
        "the handshake failed before any request"
    );

    let mut ignoring = hook("label.test.dev", "/label/a", &wrong);
    ignoring["failurePolicy"] = json!("Ignore");
    configuration(&store, "labels", vec![ignoring]);
    let (pod, warnings) = admit(&store, &webhook, new_pod("team-a", json!({})), false)
        .await
        .unwrap();
    assert_eq!(pod, new_pod("team-a", json!({})), "admitted unmutated");
    assert!(warnings.is_empty());

    // The right CA but a Service name the certificate does not carry.
    let mut elsewhere = hook("label.test.dev", "/label/a", &webhook.ca_bundle);
    elsewhere["clientConfig"]["service"]["name"] = json!("elsewhere");
    configuration(&store, "labels", vec![elsewhere]);
    let refused = admit(&store, &webhook, new_pod("team-a", json!({})), false)
        .await
        .unwrap_err();
    assert!(
        refused.message().ends_with("tls: failed to verify certificate: x509: certificate is valid for hooks.webhooks.svc, not elsewhere.webhooks.svc"),
        "{}",
        refused.message()
    );
    // No Service mapped at all.
    let mut unknown = hook("label.test.dev", "/label/a", &webhook.ca_bundle);
    unknown["clientConfig"]["service"]["name"] = json!("nowhere");
    configuration(&store, "labels", vec![unknown]);
    let refused = admit(&store, &webhook, new_pod("team-a", json!({})), false)
        .await
        .unwrap_err();
    assert!(
        refused.message().ends_with("service \"nowhere\" not found"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn namespace_and_object_selectors_exclude_pods() {
    let webhook = start_webhook().await;
    let store = Store::default();
    namespace(&store, "team-a", json!({"env": "prod"}));
    namespace(&store, "team-b", json!({"env": "dev"}));
    namespace(&store, "kube-system", json!({"env": "prod"}));
    let mut h = hook("label.test.dev", "/label/a", &webhook.ca_bundle);
    h["namespaceSelector"] = json!({"matchLabels": {"env": "prod"},
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]});
    h["objectSelector"] =
        json!({"matchExpressions": [{"key": "rolegate.dev/skip", "operator": "DoesNotExist"}]});
    configuration(&store, "labels", vec![h]);
    let labelled = |pod: &Value| pod["metadata"]["labels"]["a"] == "yes";
    assert!(labelled(
        &admit(&store, &webhook, new_pod("team-a", json!({})), false)
            .await
            .unwrap()
            .0
    ));
    assert!(
        !labelled(
            &admit(&store, &webhook, new_pod("team-b", json!({})), false)
                .await
                .unwrap()
                .0
        ),
        "env=dev"
    );
    assert!(
        !labelled(
            &admit(&store, &webhook, new_pod("kube-system", json!({})), false)
                .await
                .unwrap()
                .0
        ),
        "excluded by the name label the API server puts on every Namespace"
    );
    assert!(!labelled(
        &admit(
            &store,
            &webhook,
            new_pod("team-a", json!({"rolegate.dev/skip": "true"})),
            false
        )
        .await
        .unwrap()
        .0
    ));
    assert_eq!(webhook.received.calls("/label/a"), 1);
    // A rule for another operation or resource does not call it either.
    let r = kube_server::admission::mutate(
        &store,
        &services(webhook.addr),
        "UPDATE",
        ("", "v1", "pods"),
        "team-a",
        new_pod("team-a", json!({})),
        &User::admin(),
        false,
    )
    .await
    .unwrap();
    assert!(!labelled(&r.0));
    let r = kube_server::admission::mutate(
        &store,
        &services(webhook.addr),
        "CREATE",
        ("", "v1", "configmaps"),
        "team-a",
        json!({"kind": "ConfigMap", "metadata": {"name": "c"}}),
        &User::admin(),
        false,
    )
    .await
    .unwrap();
    assert!(r.0["metadata"]["labels"].is_null());
    assert_eq!(webhook.received.calls("/label/a"), 1);
    // A pod in a namespace that does not exist, with a namespaceSelector to evaluate: 404.
    let missing = admit(&store, &webhook, new_pod("ghost", json!({})), false)
        .await
        .unwrap_err();
    assert_eq!(
        (missing.code, missing.message()),
        (404, "namespaces \"ghost\" not found")
    );
}

#[tokio::test]
async fn a_webhook_slower_than_its_timeout_fails_the_request_or_is_ignored() {
    let webhook = start_webhook().await;
    let store = Store::default();
    namespace(&store, "team-a", json!({}));
    let mut slow = hook("slow.test.dev", "/sleep", &webhook.ca_bundle);
    slow["timeoutSeconds"] = json!(1);
    configuration(&store, "slow", vec![slow.clone()]);
    let started = Instant::now();
    let refused = admit(&store, &webhook, new_pod("team-a", json!({})), false)
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(
        refused.message(),
        "Internal error occurred: failed calling webhook \"slow.test.dev\": failed to call webhook: Post \"https://hooks.webhooks.svc:443/sleep?timeout=1s\": context deadline exceeded"
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_millis(2900),
        "gave up after the timeout, not the 3 s sleep: {waited:?}"
    );
    assert_eq!(webhook.received.all()[0].1, "timeout=1s");

    slow["failurePolicy"] = json!("Ignore");
    configuration(&store, "slow", vec![slow]);
    let (pod, _) = admit(&store, &webhook, new_pod("team-a", json!({})), false)
        .await
        .unwrap();
    assert_eq!(pod, new_pod("team-a", json!({})));
}

#[tokio::test]
async fn webhooks_run_in_name_order_and_if_needed_ones_run_again_after_a_later_change() {
    let webhook = start_webhook().await;
    let store = Store::default();
    namespace(&store, "team-a", json!({}));
    let mut first = hook("first.test.dev", "/label/first", &webhook.ca_bundle);
    first["reinvocationPolicy"] = json!("IfNeeded");
    let once = hook("once.test.dev", "/label/once", &webhook.ca_bundle);
    // Stored in the other order: the API server sorts configurations by name.
    configuration(
        &store,
        "b-later",
        vec![hook("later.test.dev", "/label/later", &webhook.ca_bundle)],
    );
    configuration(&store, "a-earlier", vec![first, once]);
    let (pod, warnings) = admit(&store, &webhook, new_pod("team-a", json!({})), false)
        .await
        .unwrap();
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"first": "yes", "once": "yes", "later": "yes"})
    );
    let order: Vec<String> = webhook
        .received
        .all()
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    assert_eq!(
        order,
        [
            "/label/first",
            "/label/once",
            "/label/later",
            "/label/first"
        ],
        "IfNeeded runs once more; Never does not"
    );
    assert_eq!(
        warnings,
        ["labelled first", "labelled once", "labelled later"],
        "each distinct warning once"
    );
    // The reinvoked webhook sees what the later ones did.
    assert_eq!(
        webhook.received.all()[3].2["request"]["object"]["metadata"]["labels"]["later"],
        "yes"
    );
}

#[tokio::test]
async fn a_rejection_a_wrong_uid_and_dry_run_are_handled_as_kubernetes_does() {
    let webhook = start_webhook().await;
    let store = Store::default();
    namespace(&store, "team-a", json!({}));
    let mut deny = hook("deny.test.dev", "/deny", &webhook.ca_bundle);
    deny["failurePolicy"] = json!("Ignore");
    configuration(&store, "deny", vec![deny]);
    let refused = admit(&store, &webhook, new_pod("team-a", json!({})), false)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code, 403,
        "a rejection is no call failure: Ignore does not admit it"
    );
    assert_eq!(
        refused.message(),
        "admission webhook \"deny.test.dev\" denied the request: no pods today"
    );

    configuration(
        &store,
        "deny",
        vec![hook("uid.test.dev", "/wrong-uid", &webhook.ca_bundle)],
    );
    let refused = admit(&store, &webhook, new_pod("team-a", json!({})), false)
        .await
        .unwrap_err();
    assert!(
        refused.message().starts_with("Internal error occurred: failed calling webhook \"uid.test.dev\": received invalid webhook response: expected response.uid=\""),
        "{}",
        refused.message()
    );

    let mut effects = hook("effects.test.dev", "/label/a", &webhook.ca_bundle);
    effects["sideEffects"] = json!("Some");
    configuration(&store, "deny", vec![effects]);
    let refused = admit(&store, &webhook, new_pod("team-a", json!({})), true)
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code, refused.message()),
        (
            400,
            "admission webhook \"effects.test.dev\" does not support dry run"
        )
    );
    configuration(
        &store,
        "deny",
        vec![hook("label.test.dev", "/label/a", &webhook.ca_bundle)],
    );
    let (pod, _) = admit(&store, &webhook, new_pod("team-a", json!({})), true)
        .await
        .unwrap();
    assert_eq!(pod["metadata"]["labels"]["a"], "yes");
    let last = webhook.received.all().pop().unwrap().2;
    assert_eq!(last["request"]["dryRun"], true);
    assert_eq!(last["request"]["options"]["dryRun"], json!(["All"]));
}

#[test]
fn webhook_configurations_are_defaulted_and_validated_as_the_api_server_does() {
    use kube_server::admission::default_and_validate_configuration;
    let mut good = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "x"}, "webhooks": [hook("label.test.dev", "/label/a", "")]});
    good["webhooks"][0]["rules"][0]
        .as_object_mut()
        .unwrap()
        .remove("scope");
    assert_eq!(default_and_validate_configuration(&mut good), []);
    let h = &good["webhooks"][0];
    assert_eq!(
        (
            &h["failurePolicy"],
            &h["matchPolicy"],
            &h["timeoutSeconds"],
            &h["reinvocationPolicy"]
        ),
        (
            &json!("Fail"),
            &json!("Equivalent"),
            &json!(10),
            &json!("Never")
        )
    );
    assert_eq!(
        (&h["namespaceSelector"], &h["objectSelector"]),
        (&json!({}), &json!({}))
    );
    assert_eq!(h["rules"][0]["scope"], "*");
    assert_eq!(h["clientConfig"]["service"]["port"], 443);

    let mut bad = good.clone();
    let b = &mut bad["webhooks"][0];
    b["name"] = json!("pods");
    b["timeoutSeconds"] = json!(31);
    b["sideEffects"] = json!("Some");
    b["failurePolicy"] = json!("Sometimes");
    b["namespaceSelector"] = json!({"matchExpressions": [{"key": "a", "operator": "In"}]});
    b["clientConfig"]["service"]["path"] = json!("admission");
    b["admissionReviewVersions"] = json!(["v2"]);
    let copy = bad["webhooks"][0].clone();
    bad["webhooks"].as_array_mut().unwrap().push(copy);
    let messages: Vec<String> = default_and_validate_configuration(&mut bad)
        .into_iter()
        .map(|c| c.message)
        .collect();
    assert_eq!(
        &messages[..8],
        [
            "webhooks[0].name: Invalid value: \"pods\": should be a domain with at least three segments separated by dots",
            "webhooks[0].failurePolicy: Unsupported value: \"Sometimes\": supported values: \"Fail\", \"Ignore\"",
            "webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\"",
            "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
            "webhooks[0].namespaceSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            "webhooks[0].clientConfig.service.path: Invalid value: \"admission\": must start with a '/'",
            "webhooks[0].admissionReviewVersions: Invalid value: []string{\"v2\"}: must include at least one of v1, v1beta1",
            "webhooks[1].name: Invalid value: \"pods\": should be a domain with at least three segments separated by dots",
        ]
    );
    assert_eq!(
        messages.last().unwrap(),
        "webhooks[1].name: Duplicate value: \"pods\""
    );
    let mut no_side_effects = good.clone();
    no_side_effects["webhooks"][0]
        .as_object_mut()
        .unwrap()
        .remove("sideEffects");
    assert_eq!(
        default_and_validate_configuration(&mut no_side_effects)[0].message,
        "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun"
    );
    // A validating webhook has no reinvocationPolicy to default.
    let mut validating = json!({"webhooks": [hook("check.test.dev", "/check", "")]});
    assert!(
        kube_server::admission::default_and_validate_webhooks(&mut validating, false).is_empty()
    );
    assert!(
        validating["webhooks"][0]
            .get("reinvocationPolicy")
            .is_none()
    );
    assert_eq!(validating["webhooks"][0]["timeoutSeconds"], 10);
    let mut neither = good.clone();
    neither["webhooks"][0]["clientConfig"] = json!({"url": "http://hooks.example.com/x?y=1"});
    let messages: Vec<String> = default_and_validate_configuration(&mut neither)
        .into_iter()
        .map(|c| c.message)
        .collect();
    assert_eq!(
        messages,
        [
            "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]",
            "webhooks[0].clientConfig.url: Invalid value: \"y=1\": query parameters are not permitted in the URL",
        ]
    );
}

/// The chart's own MutatingWebhookConfiguration, rendered by the real helm, passes the API
/// server's validation (a timeoutSeconds or policy a cluster refuses would fail here).
#[test]
fn the_charts_webhook_configuration_is_valid_for_the_api_server() {
    let peers = std::env::var_os("ROLEGATE_PEERS")
        .map_or_else(|| common::repo().join(".peers"), std::path::PathBuf::from);
    let (ok, out, err) = common::run(
        std::process::Command::new(peers.join("bin/helm"))
            .current_dir(common::repo())
            .env("HELM_CACHE_HOME", std::env::temp_dir())
            .env("HELM_CONFIG_HOME", std::env::temp_dir())
            .args([
                "template",
                "rg",
                "charts/rolegate",
                "--namespace",
                "rolegate",
                "--set",
                "publicURL=https://rolegate.example.com",
            ]),
    );
    assert!(ok, "helm template: {err}");
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(&out).unwrap();
    let mut configuration = docs
        .into_iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .expect("the chart renders one");
    assert_eq!(
        kube_server::admission::default_and_validate_configuration(&mut configuration),
        []
    );
    assert_eq!(configuration["webhooks"].as_array().unwrap().len(), 2);
}

/// rolegate's own Pod webhook (the server's `/admission/pods`, behind its own TLS), called the
/// way the API server calls it, from a MutatingWebhookConfiguration like the chart's.
#[tokio::test]
async fn rolegates_own_webhook_injects_through_the_admission_chain() {
    let now = jiff::Timestamp::now();
    let ca = rolegate::pki::new_ca(now, "rolegate operator CA").unwrap();
    let serving =
        rolegate::pki::issue_serving(&ca, &["rolegate-server.rolegate.svc".into()], now).unwrap();
    let harness = common::Harness::start_tls(
        &common::resources("webhook", false),
        &serving.cert_pem,
        &serving.key_pem,
    )
    .await;
    let addr: SocketAddr = harness.url.trim_start_matches("https://").parse().unwrap();
    let services = HashMap::from([(
        ("rolegate".to_owned(), "rolegate-server".to_owned(), 443),
        addr,
    )]);
    let store = Store::default();
    namespace(&store, "team-a", json!({}));
    store.put("admissionregistration.k8s.io", "mutatingwebhookconfigurations", json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "rolegate"},
        "webhooks": [{
            "name": "pods.rolegate.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "timeoutSeconds": 5, "reinvocationPolicy": "IfNeeded",
            "clientConfig": {"service": {"name": "rolegate-server", "namespace": "rolegate", "path": "/admission/pods", "port": 443},
                             "caBundle": base64::engine::general_purpose::STANDARD.encode(&ca.cert_pem)},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "rolegate"]}]},
        }]}));
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "team-a"},
                     "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "app:1"}]}});
    let (patched, _) = kube_server::admission::mutate(
        &store,
        &services,
        "CREATE",
        ("", "v1", "pods"),
        "team-a",
        pod.clone(),
        &User::admin(),
        false,
    )
    .await
    .unwrap();
    let env: Vec<&str> = patched["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        "{patched}"
    );
    assert_eq!(
        patched["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "rolegate"
    );

    // The same webhook behind a caBundle that is not the operator's: refused under Fail.
    let mut config = store
        .list(
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            None,
        )
        .pop()
        .unwrap();
    config["webhooks"][0]["clientConfig"]["caBundle"] = json!(
        base64::engine::general_purpose::STANDARD
            .encode(rolegate::pki::new_ca(now, "stale").unwrap().cert_pem)
    );
    store.put(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        config,
    );
    let refused = kube_server::admission::mutate(
        &store,
        &services,
        "CREATE",
        ("", "v1", "pods"),
        "team-a",
        pod,
        &User::admin(),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        refused
            .message()
            .contains("certificate signed by unknown authority"),
        "{}",
        refused.message()
    );
    drop(harness);
}

// ---------------------------------------------------------------------------------------------
// The same through the whole test API server, over HTTPS, with kube's own client

mod over_http {
    use super::*;
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
    use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
    use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
    use kube_server::{Identity, Options, TestApiServer};

    async fn cluster(services: HashMap<(String, String, u16), SocketAddr>) -> TestApiServer {
        TestApiServer::start(Options {
            crds_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds"),
            services,
        })
        .await
    }

    /// Creates any object from JSON with the admin client.
    async fn apply(server: &TestApiServer, object: Value) -> Value {
        let client = server.client(&Identity::Admin).await;
        let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (
                String::new(),
                object["apiVersion"].as_str().unwrap().to_owned(),
            ),
        };
        let kind = object["kind"].as_str().unwrap();
        let gvk = kube::api::GroupVersionKind::gvk(&group, &version, kind);
        let (resource, caps) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
        let api: Api<DynamicObject> = match (caps.scope, object["metadata"]["namespace"].as_str()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client, ns, &resource)
            }
            _ => Api::all_with(client, &resource),
        };
        let created = api
            .create(
                &PostParams::default(),
                &serde_json::from_value(object).unwrap(),
            )
            .await
            .unwrap();
        serde_json::to_value(created).unwrap()
    }

    fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
        match result {
            Err(kube::Error::Api(status)) => *status,
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    async fn team_a(server: &TestApiServer) {
        apply(
            server,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}),
        )
        .await;
        apply(server, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "team-a"}})).await;
    }

    fn app() -> Identity {
        Identity::ServiceAccount {
            namespace: "team-a".into(),
            name: "app".into(),
        }
    }

    #[tokio::test]
    async fn a_service_account_gets_the_clusters_403_until_a_role_allows_it() {
        let server = cluster(HashMap::new()).await;
        team_a(&server).await;
        apply(&server, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "team-a"}, "stringData": {"password": "x"}})).await;
        let client = server.client(&app()).await;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "team-a");
        let denied = api_error(secrets.get("db").await);
        assert_eq!((denied.code, denied.reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            denied.message,
            "secrets \"db\" is forbidden: User \"system:serviceaccount:team-a:app\" cannot get resource \"secrets\" in API group \"\" in the namespace \"team-a\""
        );
        // Discovery works without any grant, as in a cluster.
        client.apiserver_version().await.unwrap();

        apply(&server, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "db-reader", "namespace": "team-a"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["db"], "verbs": ["get"]}]})).await;
        apply(&server, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "db-reader", "namespace": "team-a"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "db-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "team-a"}]})).await;
        assert_eq!(
            secrets.get("db").await.unwrap().metadata.name.as_deref(),
            Some("db")
        );
        let listed = api_error(secrets.list(&Default::default()).await);
        assert_eq!(
            listed.message,
            "secrets is forbidden: User \"system:serviceaccount:team-a:app\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team-a\""
        );

        let audit = server.audit();
        let get = audit
            .iter()
            .find(|e| e.code == 200 && e.attrs.resource == "secrets" && e.user.ends_with(":app"))
            .unwrap();
        assert_eq!(
            get.allowed_by.as_deref(),
            Some("Role/team-a/db-reader rule 0 via RoleBinding/team-a/db-reader")
        );
        assert_eq!(
            get.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:team-a",
                "system:authenticated"
            ]
        );
        let version = audit.iter().find(|e| e.attrs.name == "/version").unwrap();
        assert_eq!(
            version.allowed_by.as_deref(),
            Some("ClusterRole/system:discovery rule 0 via ClusterRoleBinding/system:discovery")
        );
    }

    #[tokio::test]
    async fn a_pod_bound_token_from_token_request_reviews_for_its_audience_and_dies_with_the_pod() {
        let server = cluster(HashMap::new()).await;
        team_a(&server).await;
        let pod = apply(&server, json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "team-a"},
            "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "app:1"}]}})).await;
        let pod_uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
        let admin = server.client(&Identity::Admin).await;
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "team-a");
        let request: TokenRequest = serde_json::from_value(
            json!({"spec": {"audiences": ["rolegate"], "expirationSeconds": 600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": pod_uid}}}),
        )
        .unwrap();
        let issued = accounts
            .create_token_request("app", &PostParams::default(), &request)
            .await
            .unwrap();
        let token = issued.status.unwrap().token;
        assert_eq!(
            claims(&token)["kubernetes.io"]["pod"]["uid"],
            pod_uid.as_str()
        );
        let short: TokenRequest = serde_json::from_value(
            json!({"spec": {"audiences": ["rolegate"], "expirationSeconds": 60}}),
        )
        .unwrap();
        let refused = api_error(
            accounts
                .create_token_request("app", &PostParams::default(), &short)
                .await,
        );
        assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));

        let reviews: Api<TokenReview> = Api::all(admin.clone());
        let review = |audiences: Value| {
            serde_json::from_value::<TokenReview>(
                json!({"spec": {"token": token, "audiences": audiences}}),
            )
            .unwrap()
        };
        let ok = reviews
            .create(&PostParams::default(), &review(json!(["rolegate"])))
            .await
            .unwrap()
            .status
            .unwrap();
        assert_eq!(ok.authenticated, Some(true));
        assert_eq!(ok.audiences, Some(vec!["rolegate".to_owned()]));
        let user = ok.user.unwrap();
        assert_eq!(
            user.username.as_deref(),
            Some("system:serviceaccount:team-a:app")
        );
        assert_eq!(
            user.extra.unwrap()["authentication.kubernetes.io/pod-name"],
            ["web"]
        );
        let wrong = reviews
            .create(&PostParams::default(), &review(json!([])))
            .await
            .unwrap()
            .status
            .unwrap();
        assert_ne!(wrong.authenticated, Some(true));
        assert!(wrong.error.unwrap().contains(
            "is invalid for the target audiences [\"https://kubernetes.default.svc.cluster.local\"]"
        ));

        // As a bearer token to the API server itself it is refused: 401.
        let not_api = reqwest::Client::builder()
            .tls_certs_only(
                reqwest::Certificate::from_pem_bundle(server.ca_pem().as_bytes()).unwrap(),
            )
            .build()
            .unwrap();
        let answer = not_api
            .get(format!("{}/api/v1/namespaces/team-a/pods", server.url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401);

        let pods: Api<Pod> = Api::namespaced(admin, "team-a");
        pods.delete("web", &DeleteParams::default()).await.unwrap();
        let dead = reviews
            .create(&PostParams::default(), &review(json!(["rolegate"])))
            .await
            .unwrap()
            .status
            .unwrap();
        assert_ne!(dead.authenticated, Some(true));
        assert_eq!(
            dead.error.as_deref(),
            Some("[invalid bearer token, Token has been invalidated]")
        );
    }

    #[tokio::test]
    async fn a_webhook_configuration_is_stored_with_its_defaults_or_refused_as_a_cluster_would() {
        let server = cluster(HashMap::new()).await;
        let admin = server.client(&Identity::Admin).await;
        let hooks: Api<DynamicObject> = Api::all_with(
            admin,
            &kube::api::ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk(
                    "admissionregistration.k8s.io",
                    "v1",
                    "MutatingWebhookConfiguration",
                ),
                "mutatingwebhookconfigurations",
            ),
        );
        let configuration = |h: Value| -> DynamicObject {
            serde_json::from_value(json!({"apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration", "metadata": {"name": "labels"}, "webhooks": [h]}))
            .unwrap()
        };
        let mut slow = hook("label.test.dev", "/label/a", "");
        slow["timeoutSeconds"] = json!(31);
        let refused = api_error(
            hooks
                .create(&PostParams::default(), &configuration(slow))
                .await,
        );
        assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            refused.message,
            "MutatingWebhookConfiguration.admissionregistration.k8s.io \"labels\" is invalid: webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds"
        );
        let stored = hooks
            .create(
                &PostParams::default(),
                &configuration(hook("label.test.dev", "/label/a", "")),
            )
            .await
            .unwrap();
        let h = &serde_json::to_value(stored).unwrap()["webhooks"][0];
        assert_eq!(
            (
                &h["failurePolicy"],
                &h["timeoutSeconds"],
                &h["reinvocationPolicy"],
                &h["matchPolicy"]
            ),
            (
                &json!("Fail"),
                &json!(10),
                &json!("Never"),
                &json!("Equivalent")
            )
        );
        assert_eq!(h["clientConfig"]["service"]["port"], 443);
    }

    #[tokio::test]
    async fn creating_a_pod_calls_the_webhook_over_https_verified_against_its_ca_bundle() {
        let webhook = start_webhook().await;
        let server = cluster(services(webhook.addr)).await;
        team_a(&server).await;
        let other_ca = rolegate::pki::new_ca(jiff::Timestamp::now(), "someone else").unwrap();
        let configuration = |ca_bundle: &str, policy: &str| {
            let mut h = hook("label.test.dev", "/label/a", ca_bundle);
            h["failurePolicy"] = json!(policy);
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                   "metadata": {"name": "labels"}, "webhooks": [h]})
        };
        let admin = server.client(&Identity::Admin).await;
        let hooks: Api<DynamicObject> = Api::all_with(
            admin.clone(),
            &kube::api::ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk(
                    "admissionregistration.k8s.io",
                    "v1",
                    "MutatingWebhookConfiguration",
                ),
                "mutatingwebhookconfigurations",
            ),
        );
        let wrong = base64::engine::general_purpose::STANDARD.encode(other_ca.cert_pem);
        apply(&server, configuration(&wrong, "Fail")).await;
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "team-a");
        let pod = |name: &str| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": name}, "spec": {"serviceAccountName": "app",
                "containers": [{"name": "app", "image": "app:1"}]}}),
            )
            .unwrap()
        };
        let refused = api_error(pods.create(&PostParams::default(), &pod("refused")).await);
        assert_eq!(refused.code, 500);
        assert_eq!(
            refused.message,
            "Internal error occurred: failed calling webhook \"label.test.dev\": failed to call webhook: Post \"https://hooks.webhooks.svc:443/label/a?timeout=10s\": tls: failed to verify certificate: x509: certificate signed by unknown authority"
        );
        assert!(
            pods.get_opt("refused").await.unwrap().is_none(),
            "nothing stored"
        );

        hooks
            .delete("labels", &DeleteParams::default())
            .await
            .unwrap();
        apply(&server, configuration(&wrong, "Ignore")).await;
        let admitted = pods
            .create(&PostParams::default(), &pod("ignored"))
            .await
            .unwrap();
        assert!(
            !admitted
                .metadata
                .labels
                .unwrap_or_default()
                .contains_key("a"),
            "admitted unmutated"
        );

        hooks
            .delete("labels", &DeleteParams::default())
            .await
            .unwrap();
        apply(&server, configuration(&webhook.ca_bundle, "Fail")).await;
        // A raw request, to see the webhook's warning as the Warning header a client gets.
        let raw = reqwest::Client::builder()
            .tls_certs_only(
                reqwest::Certificate::from_pem_bundle(server.ca_pem().as_bytes()).unwrap(),
            )
            .build()
            .unwrap();
        let answer = raw
            .post(format!("{}/api/v1/namespaces/team-a/pods", server.url()))
            .bearer_auth(server.token(&Identity::Admin))
            .json(&pod("mutated"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
        let warnings: Vec<String> = answer
            .headers()
            .get_all("warning")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(warnings, ["299 - \"labelled a\""]);
        let stored = pods.get("mutated").await.unwrap();
        assert_eq!(
            stored.metadata.labels.unwrap()["a"],
            "yes",
            "the patch is in the stored pod"
        );
        let (_, _, review) = webhook.received.all().pop().unwrap();
        assert_eq!(review["request"]["userInfo"]["username"], "admin");
        assert_eq!(review["request"]["namespace"], "team-a");
    }
}
