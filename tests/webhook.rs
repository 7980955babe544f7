//! The Pod admission webhook: real AdmissionReview JSON in, a JSON patch out; the patch is applied
//! (json-patch, RFC 6902) and the resulting pod asserted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use rolegate::store::files::load_text;
use rolegate::webhook::{Injection, review};
use serde_json::{Value, json};

fn snapshot() -> rolegate::store::Snapshot {
    let mut s = rolegate::store::Snapshot::default();
    load_text(
        &mut s,
        std::path::Path::new("resources.yaml"),
        &common::resources("webhook", false),
    )
    .unwrap();
    s
}

fn admission(pod: &Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
           "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "namespace": "team-a", "operation": "CREATE",
                       "kind": {"group": "", "version": "v1", "kind": "Pod"},
                       "resource": {"group": "", "version": "v1", "resource": "pods"},
                       "object": pod}})
}

/// Reviews `pod` and returns (the pod after the patch, the response, the message).
fn admit(pod: &Value) -> (Value, Value, String) {
    let body = serde_json::to_vec(&admission(pod)).unwrap();
    let (answer, message) = review(&body, &snapshot(), &Injection::default()).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    let response = answer["response"].clone();
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true, "the webhook never blocks a pod");
    let mut patched = pod.clone();
    if let Some(patch) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        let ops: json_patch::Patch = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(patch)
                .unwrap(),
        )
        .unwrap();
        json_patch::patch(&mut patched, &ops).unwrap();
    }
    (patched, response, message)
}

fn pod(sa: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "team-a"},
           "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app:1"}]}})
}

fn env(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn a_pod_with_no_mapping_is_left_alone() {
    let (patched, response, message) = admit(&pod("stranger"));
    assert_eq!(patched, pod("stranger"));
    assert!(response.get("patch").is_none());
    assert!(
        response.get("warnings").is_none(),
        "unmapped pods are the common case: no warning"
    );
    assert_eq!(
        message,
        "no RoleMapping names service account team-a/stranger; nothing injected"
    );
}

#[test]
fn a_mapped_service_account_gets_the_variables_and_the_token_volume() {
    let (patched, _, message) = admit(&pod("app"));
    assert_eq!(message, "injected (RoleMapping team-a/app-reader)");
    let container = &patched["spec"]["containers"][0];
    assert_eq!(
        env(container, "AWS_CONTAINER_CREDENTIALS_FULL_URI").unwrap(),
        "http://169.254.170.23/v1/credentials"
    );
    assert_eq!(
        env(container, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").unwrap(),
        "/var/run/secrets/rolegate.dev/serviceaccount/token"
    );
    assert_eq!(container["volumeMounts"][0]["name"], "rolegate-token");
    assert_eq!(container["volumeMounts"][0]["readOnly"], true);
    let source = &patched["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(source["audience"], "rolegate");
    assert_eq!(source["expirationSeconds"], 3600);
    assert_eq!(source["path"], "token");
    // Idempotent: the injected pod needs nothing more.
    let (again, response, message) = admit(&patched);
    assert_eq!(again, patched);
    assert!(response.get("patch").is_none());
    assert_eq!(message, "already injected (RoleMapping team-a/app-reader)");
}

#[test]
fn the_opt_in_label_injects_without_a_mapping() {
    let mut p = pod("stranger");
    p["metadata"]["labels"] = json!({"rolegate.dev/inject": "true"});
    let (patched, _, message) = admit(&p);
    assert_eq!(message, "injected (label rolegate.dev/inject)");
    assert!(
        env(
            &patched["spec"]["containers"][0],
            "AWS_CONTAINER_CREDENTIALS_FULL_URI"
        )
        .is_some()
    );
}

#[test]
fn variables_the_user_set_are_kept_and_init_containers_are_injected_too() {
    let mut p = pod("app");
    p["spec"]["containers"][0]["env"] = json!([{"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://127.0.0.1:9911/creds"},
                                              {"name": "OTHER", "value": "x"}]);
    p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "migrate:1"}]);
    let (patched, _, _) = admit(&p);
    let app = &patched["spec"]["containers"][0];
    assert_eq!(
        env(app, "AWS_CONTAINER_CREDENTIALS_FULL_URI").unwrap(),
        "http://127.0.0.1:9911/creds",
        "never overwritten"
    );
    assert_eq!(env(app, "OTHER").unwrap(), "x");
    assert!(env(app, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").is_some());
    assert_eq!(app["volumeMounts"].as_array().unwrap().len(), 2);
    assert_eq!(patched["spec"]["volumes"].as_array().unwrap().len(), 2);
    let init = &patched["spec"]["initContainers"][0];
    assert!(
        env(init, "AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some(),
        "init containers too"
    );
    assert_eq!(init["volumeMounts"][0]["name"], "rolegate-token");
}

#[test]
fn annotated_containers_are_skipped_and_a_role_rides_on_the_uri() {
    let mut p = pod("app");
    p["spec"]["containers"] =
        json!([{"name": "app", "image": "app:1"}, {"name": "istio-proxy", "image": "proxy:1"}]);
    p["metadata"]["annotations"] = json!({"rolegate.dev/skip-containers": "istio-proxy",
                                          "rolegate.dev/role": "arn:aws:iam::123456789012:role/app-reader"});
    let (patched, _, _) = admit(&p);
    assert_eq!(
        env(
            &patched["spec"]["containers"][0],
            "AWS_CONTAINER_CREDENTIALS_FULL_URI"
        )
        .unwrap(),
        "http://169.254.170.23/v1/credentials?role=arn:aws:iam::123456789012:role/app-reader"
    );
    assert!(
        patched["spec"]["containers"][1].get("env").is_none(),
        "the skipped container is untouched"
    );
    assert!(
        patched["spec"]["containers"][1]
            .get("volumeMounts")
            .is_none()
    );
}

#[test]
fn a_role_annotated_on_the_service_account_rides_on_the_uri_unless_the_pod_names_another() {
    let mut snapshot = snapshot();
    load_text(
        &mut snapshot,
        std::path::Path::new("serviceaccounts.yaml"),
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app\n  namespace: team-a\n  annotations:\n    rolegate.dev/role: arn:aws:iam::123456789012:role/app-writer\n",
    )
    .unwrap();
    let uri = |pod: &Value| {
        let body = serde_json::to_vec(&admission(pod)).unwrap();
        let (answer, _) = review(&body, &snapshot, &Injection::default()).unwrap();
        let ops: json_patch::Patch = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(answer["response"]["patch"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &ops).unwrap();
        env(
            &patched["spec"]["containers"][0],
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        )
        .unwrap()
    };
    assert_eq!(
        uri(&pod("app")),
        "http://169.254.170.23/v1/credentials?role=arn:aws:iam::123456789012:role/app-writer"
    );
    let mut p = pod("app");
    p["metadata"]["annotations"] =
        json!({"rolegate.dev/role": "arn:aws:iam::123456789012:role/app-reader"});
    assert_eq!(
        uri(&p),
        "http://169.254.170.23/v1/credentials?role=arn:aws:iam::123456789012:role/app-reader",
        "the pod's own annotation wins"
    );
    // Another namespace's service account of the same name carries no role.
    assert_eq!(
        snapshot
            .service_account_roles
            .get(&("team-b".to_owned(), "app".to_owned())),
        None
    );
}

#[test]
fn a_namespace_the_provider_does_not_allow_is_not_injected() {
    let mut p = pod("app");
    p["metadata"]["namespace"] = json!("team-b");
    let mut review_json = admission(&p);
    review_json["request"]["namespace"] = json!("team-b");
    let (answer, message) = review(
        &serde_json::to_vec(&review_json).unwrap(),
        &snapshot(),
        &Injection::default(),
    )
    .unwrap();
    assert!(answer["response"].get("patch").is_none());
    assert!(
        message.contains("(NamespaceNotAllowed)") || message.contains("does not allow namespace"),
        "{message}"
    );
}

#[test]
fn malformed_reviews_get_a_clear_error() {
    let cases: [(&[u8], &str); 4] = [
        (b"not json", "malformed AdmissionReview: expected ident"),
        (
            br#"{"apiVersion": "admission.k8s.io/v1beta1", "request": {"uid": "u"}}"#,
            "apiVersion \"admission.k8s.io/v1beta1\" is not admission.k8s.io/v1",
        ),
        (
            br#"{"apiVersion": "admission.k8s.io/v1"}"#,
            "malformed AdmissionReview: no request",
        ),
        (
            br#"{"apiVersion": "admission.k8s.io/v1", "request": {"uid": ""}}"#,
            "request.uid is empty",
        ),
    ];
    for (body, want) in cases {
        let err = review(body, &snapshot(), &Injection::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err:?} does not say {want:?}");
    }
    // A review of something that is not a Pod is answered, allowed, with a warning.
    let mut not_a_pod = admission(&pod("app"));
    not_a_pod["request"]["object"] = json!({"spec": {"containers": "nope"}});
    let (answer, message) = review(
        &serde_json::to_vec(&not_a_pod).unwrap(),
        &snapshot(),
        &Injection::default(),
    )
    .unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(
        message.starts_with("request.object is not a Pod"),
        "{message}"
    );
    assert!(
        answer["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("rolegate: request.object is not a Pod")
    );
}

#[tokio::test]
async fn the_server_answers_reviews_over_http() {
    let h = common::Harness::start(&common::resources(&common::unique("hook"), false)).await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/admission/pods", h.url))
        .json(&admission(&pod("app")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let response = client
        .post(format!("{}/admission/pods", h.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "invalid_request");
}

#[test]
fn a_container_annotated_with_its_own_role_gets_it_over_the_pods() {
    let mut p = pod("multi");
    p["metadata"]["annotations"] = json!({
        "rolegate.dev/role": "arn:aws:iam::123456789012:role/app-reader",
        "rolegate.dev/role.uploader": "arn:aws:iam::123456789012:role/app-writer",
    });
    p["spec"]["containers"] =
        json!([{"name": "app", "image": "app:1"}, {"name": "uploader", "image": "up:1"}]);
    let (patched, response, _) = admit(&p);
    assert!(response.get("warnings").is_none(), "{response}");
    let uri = |i: usize| {
        env(
            &patched["spec"]["containers"][i],
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        )
        .unwrap()
    };
    assert_eq!(
        uri(0),
        "http://169.254.170.23/v1/credentials?role=arn:aws:iam::123456789012:role/app-reader"
    );
    assert_eq!(
        uri(1),
        "http://169.254.170.23/v1/credentials?role=arn:aws:iam::123456789012:role/app-writer"
    );
}

#[test]
fn a_role_annotation_naming_no_container_and_irsa_variables_are_warned_about() {
    let mut p = pod("app");
    p["metadata"]["annotations"] =
        json!({"rolegate.dev/role.uploadr": "arn:aws:iam::123456789012:role/app-reader"});
    p["spec"]["containers"][0]["env"] =
        json!([{"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/irsa"}]);
    let (patched, response, _) = admit(&p);
    // Still injected: warnings never block a pod.
    assert!(
        env(
            &patched["spec"]["containers"][0],
            "AWS_CONTAINER_CREDENTIALS_FULL_URI"
        )
        .is_some()
    );
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0]
            .contains("rolegate.dev/role.uploadr names no container of this pod (containers: app)"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("container app also has AWS_ROLE_ARN (IRSA)"),
        "{warnings:?}"
    );
}

#[test]
fn a_native_sidecar_keeps_its_restart_policy_and_gets_the_variables() {
    let mut p = pod("app");
    p["spec"]["initContainers"] = json!([
        {"name": "proxy", "image": "envoy:1", "restartPolicy": "Always",
         "env": [{"name": "LOG", "value": "info"}]},
    ]);
    let (patched, _, _) = admit(&p);
    let sidecar = &patched["spec"]["initContainers"][0];
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["image"], "envoy:1");
    assert_eq!(env(sidecar, "LOG").as_deref(), Some("info"));
    assert!(env(sidecar, "AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some());
    assert!(env(sidecar, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").is_some());
    // And the patched pod still parses as a Pod, its sidecar a restartable init container.
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(patched).unwrap();
    assert_eq!(
        typed.spec.unwrap().init_containers.unwrap()[0]
            .restart_policy
            .as_deref(),
        Some("Always")
    );
}

#[test]
fn a_granted_pod_admitted_without_the_webhook_is_missed_and_an_injected_one_is_not() {
    let snapshot = snapshot();
    let parse = |v: &Value| -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(v.clone()).unwrap()
    };
    let bare = pod("app");
    let reason = rolegate::webhook::missed(&parse(&bare), "team-a", &snapshot).unwrap();
    assert!(
        reason.contains("RoleMapping team-a/app-reader")
            || reason.contains("RoleMapping app-reader"),
        "{reason}"
    );
    assert!(
        reason.contains("container(s) app have no AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        "{reason}"
    );
    let (injected, _, _) = admit(&bare);
    assert_eq!(
        rolegate::webhook::missed(&parse(&injected), "team-a", &snapshot),
        None
    );
    // Not granted anything, or finished: nothing to report.
    assert_eq!(
        rolegate::webhook::missed(&parse(&pod("nobody")), "team-a", &snapshot),
        None
    );
    let mut done = bare.clone();
    done["status"] = json!({"phase": "Succeeded"});
    assert_eq!(
        rolegate::webhook::missed(&parse(&done), "team-a", &snapshot),
        None
    );
    // A container skipped by annotation is not expected to have the variables.
    let mut skipped = bare;
    skipped["metadata"]["annotations"] = json!({"rolegate.dev/skip-containers": "app"});
    assert_eq!(
        rolegate::webhook::missed(&parse(&skipped), "team-a", &snapshot),
        None
    );
}

#[tokio::test]
async fn a_missed_pod_gets_one_warning_event_and_counts_once() {
    use common::apiserver::{self, Expect};
    let mut p = pod("app");
    p["metadata"]["uid"] = json!("0f6c1b9e-3b0c-4a47-9c1e-3a2f1d9e7c11");
    let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(p).unwrap();
    let (client, handle) = apiserver::client();
    let missed = prometheus_client::metrics::counter::Counter::<u64>::default();
    let audit = rolegate::pod_audit::PodAudit::new(client, missed.clone());
    let server = apiserver::scenario(handle, vec![Expect::event("team-a")]);
    let snapshot = snapshot();
    assert!(audit.check(&p, &snapshot).await);
    // The pod's next update (status, readiness) is not reported again.
    assert!(!audit.check(&p, &snapshot).await);
    let (seen, mut handle) = server.await.unwrap();
    apiserver::no_more(&mut handle).await;
    let event = &seen[0].body;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "CredentialsNotInjected");
    assert_eq!(event["regarding"]["kind"], "Pod");
    assert_eq!(event["regarding"]["name"], "web");
    assert_eq!(
        event["regarding"]["uid"],
        "0f6c1b9e-3b0c-4a47-9c1e-3a2f1d9e7c11"
    );
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("admitted without the rolegate webhook")
    );
    assert_eq!(missed.get(), 1);
}
